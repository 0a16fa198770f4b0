"""Inside a trained mask head: does a deep head group like overseparation-grouping?

``masksep analyze`` (:mod:`masksep.analyze.run`) computes three views of each
deep or og head (:mod:`masksep.analyze.views`), each against the same head at
initialisation, and writes analysis.json, summary.md and a PNG per checkpoint
(:mod:`masksep.analyze.render`). A study report reads analysis.json through
:func:`study_analysis_section` (:mod:`masksep.analyze.study`), which needs no
torch.
"""

from masksep.analyze.study import study_analysis_section, study_analysis_table

__all__ = ["study_analysis_section", "study_analysis_table"]
