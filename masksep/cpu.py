"""How many CPU threads training uses, on a machine that may be doing other work.

torch's intra-op threads meet at a barrier after every parallel operation. When
another process keeps the same cores busy, one of our threads is descheduled,
the others wait at the barrier, and a training step on 2 cores beside a 2-thread
BLAS process took 50x as long as alone (issue 12). So, by default (``train.threads``
0), training starts with as many threads as CPUs it was given and, every couple
of seconds, looks at how much of those CPUs other processes used
(``/proc/stat`` minus this process's own time) and runs with the cores that are
left, at least one. ``train.threads`` (``masksep train --threads N``) or the
``MASKSEP_THREADS`` environment variable fixes the CPUs a run uses instead (a
sweep's trial uses the CPUs Ray gave it).

Training data made on the fly (the embedded synthetic mixtures) takes about a
third of a step on one core; with two or more CPUs one DataLoader worker process
makes it while the training process computes (:func:`plan`), which was 1.6x
more steps per second on 2 cores than both in one process with two threads.
(A thread instead of a process, or OMP_WAIT_POLICY=PASSIVE, were both slower:
the GIL and the threads' wake-up cost more than they saved.)

Memory, too, is a CPU cost here: glibc gives every large block (a step's
activations, gradients, an LSTM's workspace) back to the kernel when torch frees
it, and takes fresh pages for the next step, each one a page fault that the
kernel zeroes. A study-tcn step on 2 cores spent 21 of its 47 ms in those faults
(4,200 a step); a paper DPRNN step 3.2 of its 6.4 s (690,000 faults). Training
and separation therefore ask glibc to keep freed memory for reuse
(:func:`keep_freed_memory`): the process holds on to its peak heap, which it
reaches every step anyway (plus what the heap cannot coalesce: a paper DPRNN
step at batch 2 peaked at 4.0-4.1 GB instead of 2.3-2.5 GB), and the faults
are gone (DPRNN 15,000-20,000 a step; study-tcn under 100). ``MASKSEP_MALLOC=system`` turns it off.
"""

from __future__ import annotations

import os
import time

THREADS_ENV = "MASKSEP_THREADS"
MALLOC_ENV = "MASKSEP_MALLOC"  # "system": leave glibc's malloc settings alone
# glibc mallopt parameters (malloc.h) and the values measured best (issue 12):
# a 256 MiB pad on every heap extension, nothing given back below 2 GiB free,
# and no block mmap'ed on its own (those go back to the kernel at each free).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD = 256 << 20
_TRIM_THRESHOLD = 2**31 - 1  # the largest an int holds
_malloc_kept: bool | None = None
SAMPLE_S = 2.0  # how often the governor looks at the machine
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpus_given() -> int:
    """CPUs this process may use: Ray's OMP_NUM_THREADS when set, else the affinity mask."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def plan(cpus: int, num_workers: int) -> tuple[int, int]:
    """(torch threads, DataLoader workers) for a run with ``cpus`` CPUs;
    ``num_workers`` -1 is auto: one worker from 2 CPUs, which takes one thread's CPU."""
    workers = num_workers if num_workers >= 0 else (1 if cpus >= 2 else 0)
    return max(1, cpus - min(workers, 1)), workers


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it
    to the kernel; True when it took effect. Once per process (DataLoader workers
    forked after it inherit it); a no-op without glibc (macOS, musl) or with
    ``MASKSEP_MALLOC=system``. What is computed does not change, only where the
    memory comes from."""
    global _malloc_kept
    if _malloc_kept is None:
        _malloc_kept = False
        if os.environ.get(MALLOC_ENV, "").strip().lower() != "system":
            import ctypes

            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            _malloc_kept = bool(mallopt(_M_TOP_PAD, _TOP_PAD)
                                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
                                and mallopt(_M_MMAP_MAX, 0))
    return _malloc_kept


def fixed_threads(requested: int = 0) -> int:
    """The thread count a user fixed (train.threads, else MASKSEP_THREADS), or 0 for auto."""
    if requested:
        return requested
    env = os.environ.get(THREADS_ENV, "")
    return int(env) if env.isdigit() and int(env) > 0 else 0


def _busy_ticks(cpus: set[int] | None) -> int | None:
    """Busy jiffies (user, nice, system, irq, softirq, steal) of ``cpus`` since boot."""
    try:
        with open("/proc/stat") as f:
            lines = f.readlines()
    except OSError:
        return None
    total = 0
    for line in lines[1:]:
        if not line.startswith("cpu"):
            break
        name, *fields = line.split()
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        total += user + nice + system + irq + softirq + steal
    return total


def _own_ticks() -> int | None:
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


class ThreadGovernor:
    """Keeps torch's intra-op threads at the cores other processes leave free.

    ``tick()`` after every training step costs a clock read; every SAMPLE_S it
    reads two /proc files and maybe calls torch.set_num_threads.
    """

    def __init__(self, requested: int = 0, limit: int | None = None, adapt: bool = True):
        import torch

        self.torch = torch
        fixed = fixed_threads(requested)
        self.limit = limit or fixed or cpus_given()
        self.auto = adapt and not fixed and self.limit > 1
        try:
            affinity = os.sched_getaffinity(0)
        except AttributeError:
            affinity = None
        self.cpus = affinity if affinity is not None and len(affinity) < (os.cpu_count() or 0) else None
        self.threads = self.limit
        self.changes = 0
        torch.set_num_threads(self.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass
        self._mark()

    def _mark(self) -> None:
        self._t = time.monotonic()
        self._busy = _busy_ticks(self.cpus)
        self._own = _own_ticks()

    def others_busy(self) -> float | None:
        """Cores' worth of CPU that other processes used since the last sample."""
        t, busy, own = time.monotonic(), _busy_ticks(self.cpus), _own_ticks()
        if None in (busy, own, self._busy, self._own) or t - self._t <= 0:
            return None
        return max(0.0, ((busy - self._busy) - (own - self._own)) / _TICK / (t - self._t))

    def tick(self) -> None:
        if not self.auto or time.monotonic() - self._t < SAMPLE_S:
            return
        others = self.others_busy()
        self._mark()
        if others is None:
            return
        want = max(1, min(self.limit, round(self.limit - others)))
        if want != self.threads:
            self.threads = want
            self.changes += 1
            self.torch.set_num_threads(want)
