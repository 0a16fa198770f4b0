"""Where a training run's progress goes: train.fit calls a Reporter; the terminal,
Ray Tune and W&B each hang off this one interface."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def line(text: str) -> None:
    """A time-stamped line on the terminal of a sweep's driver."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class Reporter:
    """Hooks called by :func:`masksep.train.fit`, on every rank of a DDP run
    (a reporter that writes files checks ``info["rank"]`` from :meth:`start`).
    Every hook is optional."""

    def start(self, info: dict[str, Any]) -> None:
        """Once, before the first epoch: resolved config, complexity, start epoch."""

    def progress(self, epoch: int, step: int, n_steps: int, loss: float) -> None:
        """After every training step."""

    def epoch(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        """After every epoch, once its checkpoint is on disk. Under DDP every rank
        calls it (Ray Train's report is a barrier); ``checkpoint_dir`` is None off rank 0."""

    def end(self, summary: dict[str, Any]) -> None:
        """Once, after the test evaluation."""


class MultiReporter(Reporter):
    def __init__(self, *reporters: Reporter):
        self.reporters = [r for r in reporters if r is not None]

    def start(self, info):
        for r in self.reporters:
            r.start(info)

    def progress(self, epoch, step, n_steps, loss):
        for r in self.reporters:
            r.progress(epoch, step, n_steps, loss)

    def epoch(self, metrics, checkpoint_dir):
        for r in self.reporters:
            r.epoch(metrics, checkpoint_dir)

    def end(self, summary):
        for r in self.reporters:
            r.end(summary)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


class TerminalReporter(Reporter):
    """A progress bar on stderr when it is a terminal; one JSON line per epoch on stdout."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, bar: bool | None = None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.bar = self.err.isatty() if bar is None else bar
        self._t0 = time.monotonic()
        self._last_draw = 0.0

    def start(self, info):
        c = info["complexity"]
        what = (
            f"{info['head']['head']} head (depth {info['head']['depth']}, P {info['head']['oversep']}), "
            f"{info['backbone']} backbone, {c['params'] / 1e6:.3f}M params, "
            f"{c['macs_per_s'] / 1e9:.3f} GMAC/s (head {c['head_macs_per_s'] / 1e6:.1f} MMAC/s), "
            f"{info['device']} x{info['threads']} threads"
        )
        if info.get("start_epoch", 1) > 1:
            what += f", resuming at epoch {info['start_epoch']}"
        print(f"masksep: {what}", file=self.err, flush=True)

    def progress(self, epoch, step, n_steps, loss):
        if not self.bar:
            return
        now = time.monotonic()
        if step < n_steps and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        width = 30
        done = int(width * step / max(n_steps, 1))
        bar = "#" * done + "." * (width - done)
        self.err.write(f"\repoch {epoch} [{bar}] {step}/{n_steps} loss {loss:7.2f}")
        self.err.flush()

    def epoch(self, metrics, checkpoint_dir):
        if self.bar:
            self.err.write("\r" + " " * 72 + "\r")
        print(json.dumps(metrics), file=self.out, flush=True)

    def end(self, summary):
        keys = ("test_si_snri", "test_sdri", "best_val_si_snri", "epochs", "wall_s")
        line = ", ".join(f"{k} {_fmt(summary.get(k))}" for k in keys)
        print(f"masksep: done: {line}", file=self.err, flush=True)
