"""How many CPU threads PyTorch uses: the package's policy for a machine that is not idle.

PyTorch starts one thread per core, and its threads spin while they wait for each other. On a
laptop or a 2-core Colab runtime where something else keeps a core busy (a browser, a second
kernel), two threads fight over the one free core and training or generation slows several-fold
(benchmarks/README.md, "busy machine"). So tinygpt chooses:

- on a CPU, one thread per free core, at least one: the cores this process may use, less the
  cores other processes kept busy since the last look (their CPU time over the wall time, from
  psutil). Generation looks at each call, training at every evaluation, so both follow a load
  that starts or stops.

One setting overrides both: the environment variable TINYGPT_THREADS=N fixes the number of
threads (OMP_NUM_THREADS, PyTorch's own setting, which torchrun sets to 1 for each of its
processes, is honoured the same way when TINYGPT_THREADS is not set). Results depend slightly on
the thread count (sums are split differently), so two runs are bit-identical only with the same
number of threads: fix it when that matters.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import psutil
import torch

ENV = "TINYGPT_THREADS"
BUSY = 0.75  # a core another process keeps at least 75% busy is not free
MIN_LOOK = 0.1  # seconds: a shorter interval says too little about the load


def fixed_threads() -> int | None:
    """The thread count TINYGPT_THREADS (else OMP_NUM_THREADS) fixes, or None when neither is set.

    ValueError (one line) when TINYGPT_THREADS is not a whole number of at least 1."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        omp = os.environ.get("OMP_NUM_THREADS", "").strip()
        return int(omp) if omp.isdigit() and int(omp) > 0 else None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV} must be a whole number of threads, 1 or more; got {value!r}")
    return n


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_times() -> tuple[float, float, float]:
    """(wall clock, CPU seconds every process has used, CPU seconds this process has used)."""
    cpu, own = psutil.cpu_times(), psutil.Process().cpu_times()
    return time.monotonic(), sum(cpu) - cpu.idle - getattr(cpu, "iowait", 0.0), own.user + own.system


class LoadMeter:
    """Cores kept busy by other processes between two looks: (all CPU time - this process's) / wall time.

    `sample`: where the times come from (default cpu_times; the tests pass their own)."""

    def __init__(self, sample=cpu_times):
        self._sample = sample
        self._last = sample()

    def others_busy(self) -> float | None:
        """Cores' worth of CPU time other processes used since the last look (or since creation);
        None when less than MIN_LOOK seconds have passed (too short to tell: the next look covers it)."""
        now = self._sample()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        if t1 - t0 < MIN_LOOK:
            return None
        self._last = now
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


def free_cores(others_busy: float, cores: int | None = None) -> int:
    """Cores left for this process when other processes keep `others_busy` cores' worth busy (at least 1)."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores - int(others_busy + (1 - BUSY)))


_meter = LoadMeter()  # this process's: each look reads the load since the look before
_free: int | None = None  # the free cores at the latest look that could tell


def free_now() -> int:
    """The cores free for this process by its latest look at the load (the look before when this
    one comes too soon after it; torch's thread count before any)."""
    global _free
    busy = _meter.others_busy()
    if busy is not None:
        _free = free_cores(busy)
    return _free if _free is not None else torch.get_num_threads()


class TrainingThreads:
    """Sets torch's thread count for training on a CPU: TINYGPT_THREADS, else the free cores.

    `update()` looks again (training calls it at every evaluation) and returns the count in force;
    the count stays set after training. On a GPU or MPS it leaves torch's setting alone (the CPU
    only feeds the device). `meter`: a LoadMeter of the caller's (default: this process's)."""

    def __init__(self, device_type: str = "cpu", *, meter: LoadMeter | None = None):
        self.active = device_type == "cpu"
        self.fixed = fixed_threads() if self.active else None
        self._meter = meter
        self.update()

    def update(self) -> int:
        if self.active:
            if self.fixed:
                n = self.fixed
            elif self._meter is None:
                n = free_now()
            else:
                busy = self._meter.others_busy()
                n = torch.get_num_threads() if busy is None else free_cores(busy)
            if n != torch.get_num_threads():
                torch.set_num_threads(n)
        return torch.get_num_threads()


def generation_threads(device_type: str = "cpu") -> int | None:
    """Threads to generate with: on a CPU the fixed count (TINYGPT_THREADS, else OMP_NUM_THREADS),
    else the free cores, or one in a thread other than the main one (the playground's worker: there
    two OpenMP threads made 300 characters about 3x slower than one, measured on a 2-core CPU);
    None elsewhere (nothing to set)."""
    if device_type != "cpu":
        return None
    if fixed_threads():
        return fixed_threads()
    return free_now() if threading.current_thread() is threading.main_thread() else 1


@contextlib.contextmanager
def using_threads(n: int | None):
    """Within: torch on `n` threads (None: as it is); torch's setting is restored after."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
