"""masksep: sweeps over mask estimation modules for neural source separation.

Li, Hu & Luo, "On the Use of Deep Mask Estimation Module for Neural Source
Separation Systems" (Interspeech 2022): shallow vs deep (MLP) mask heads vs
overseparation-grouping, trained as one local trial or swept on Ray Tune.
"""

__version__ = "0.1.0"
