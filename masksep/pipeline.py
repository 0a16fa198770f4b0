"""What ``masksep sweep`` runs, in order: the sweep (sweep/runner.py, which ends at
``tuner.fit``; a tuned study's stages in masksep/tuned.py), then the report of the
sweep folder (masksep/report), then W&B's summary run of the sweep. The sweep
package imports neither the report nor this module: the arrows point down.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from masksep import rundir


def _line(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def sweep_and_report(spec_path: str | Path, out: str | Path, **sweep_kwargs: Any
                     ) -> dict[str, Any] | None:
    """Run (or resume) the sweep, then report it; the report's summary (None when a
    resume finds the sweep already finished: its report is already there)."""
    from masksep.sweep.runner import run_sweep

    state = run_sweep(spec_path, out, **sweep_kwargs)
    return None if state is None else report_and_track(Path(out).resolve(), state)


def report_and_track(out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The report of a finished sweep folder, then its W&B summary run (when the
    sweep logged to W&B)."""
    from masksep.report import write_report
    from masksep.sweep import tracking

    summary = write_report(out)
    _line(f"report: {out / 'summary.md'}")
    if state.get("wandb"):
        target = tracking.WandbTarget(**state["wandb"])
        tracking.log_sweep_run(target, out / rundir.TRIALS, {"sweep": state["name"], **summary},
                               state["uid"])
        if tracking.offline_runs(out):
            _line(f"W&B runs are offline; upload them with: wandb sync {out / 'wandb'}/offline-run-*")
    return summary
