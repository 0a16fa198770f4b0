"""The one test seam in shipped code: fault points for the sweep's fault tests.

A fault test (tests/test_sweep.py) kills a sweep's driver, or fails a trial,
at a named point of a trial, deterministically: it sets ``MASKSEP_TEST_PAUSE``
to the point and ``MASKSEP_TEST_PAUSE_DIR`` to a folder, and waits for the
marker file ``<dir>/<trial_id>.paused`` that says the trial got there. Points:

- ``summary``: summary.json is in storage, the final report not sent yet;
- ``checkpoint:N``: last.pt of epoch N is in storage, its report not sent;
- ``mid-epoch:N``: half-way through epoch N.

With the prefix ``fail-once:`` the trial raises there instead of pausing, the
first time only (the marker says it did), so that Tune retries it; with
``pause-once:`` it pauses there the first time only, so that a retry (after the
test killed the node it ran on) goes on. Without the variable nothing here runs:
:func:`fault_point` returns None.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from masksep.progress import Reporter

PAUSE_ENV = "MASKSEP_TEST_PAUSE"
PAUSE_DIR_ENV = "MASKSEP_TEST_PAUSE_DIR"


def fault_point(trial_id: str) -> Reporter | None:
    """The reporter that stops (or fails) this trial where the test asked; None normally."""
    point = os.environ.get(PAUSE_ENV)
    return PauseForTest(point, os.environ[PAUSE_DIR_ENV], trial_id) if point else None


class PauseForTest(Reporter):
    """Stops the trial at a named point until it is killed, or fails it there once."""

    def __init__(self, point: str, marker_dir: str, trial_id: str):
        self.point, self.marker = point, Path(marker_dir) / f"{trial_id}.paused"

    def _pause(self, where: str) -> None:
        fail = self.point.startswith("fail-once:")
        once = fail or self.point.startswith("pause-once:")
        target = self.point.removeprefix("fail-once:").removeprefix("pause-once:")
        if where != target or (once and self.marker.exists()):
            return
        tmp = self.marker.with_suffix(".tmp")
        tmp.write_text(where)
        os.replace(tmp, self.marker)
        if fail:
            raise RuntimeError(f"test failure at {where} ({PAUSE_ENV})")
        while True:  # until the test kills the driver and its Ray
            time.sleep(1)

    def progress(self, epoch, step, n_steps, loss):
        if step == max(1, n_steps // 2):
            self._pause(f"mid-epoch:{epoch}")

    def epoch(self, metrics, checkpoint_dir):
        self._pause(f"checkpoint:{metrics['epoch']}")

    def end(self, summary):
        self._pause("summary")
