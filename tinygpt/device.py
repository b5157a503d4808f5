"""Where training runs and in which number format: device and precision selection.

Precision is a property of the machine, not of a run: a checkpoint holds fp32 weights, and a run
resumed elsewhere uses the precision that suits the machine it resumes on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def available_devices() -> list[str]:
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out + ["cpu"]


def pick_device(device: str | None = "auto", available=None) -> torch.device:
    """`device`, else $TINYGPT_DEVICE, else the first of cuda, mps, cpu that is available.

    `available`: the devices to choose from (default: available_devices()). ValueError for an
    unknown or unavailable device."""
    available = available_devices() if available is None else list(available)
    if device in (None, "auto"):
        device = os.environ.get("TINYGPT_DEVICE") or "auto"
    if device == "auto":
        return torch.device(available[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    if dev.type not in available:
        raise ValueError(f"device {device!r} is not available here; available: {', '.join(available)}")
    return dev


@functools.cache
def cpu_bf16_speedup(n: int = 512, reps: int = 8) -> float:
    """Measured speed of a bf16 matmul relative to fp32 on this CPU (>1: bf16 is faster)."""
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best(a, b):
        a @ b  # warm-up
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a32, b32) / best(a16, b16)


def precision_for(device_type: str, capability: tuple[int, int] | None = None,
                  cpu_bf16_speedup_fn=cpu_bf16_speedup) -> str:
    """fp32, bf16 or fp16 for a device: bf16 on CUDA compute capability >= 8.0, fp16 (with a
    GradScaler) below it (a T4 is 7.5), fp32 on MPS, and on CPU bf16 only where it is faster."""
    if device_type == "cuda":
        if capability is None:
            capability = torch.cuda.get_device_capability()
        return "bf16" if tuple(capability) >= (8, 0) else "fp16"
    if device_type == "cpu":
        return "bf16" if cpu_bf16_speedup_fn() >= 1.3 else "fp32"
    return "fp32"


def pick_precision(device: torch.device, precision: str | None = "auto") -> str:
    """`precision`, else $TINYGPT_PRECISION, else precision_for(device).

    fp16 (autocast with a GradScaler) runs on CUDA, and on a CPU too (slowly: that is how the
    CPU test suite reaches a T4's code path; the command line keeps fp16 to CUDA). ValueError for
    an unknown precision, or anything but fp32 on MPS."""
    if precision in (None, "auto"):
        precision = os.environ.get("TINYGPT_PRECISION") or "auto"
    if precision == "auto":
        return precision_for(device.type)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if precision == "fp16" and device.type not in ("cuda", "cpu"):
        raise ValueError("fp16 training needs a CUDA GPU; use bf16 or fp32")
    if precision != "fp32" and device.type == "mps":  # autocast does not support MPS in every release
        raise ValueError(f"{precision} autocast is not supported on Apple MPS here; use fp32 (the default there)")
    return precision


def autocast_context(device: torch.device, precision: str):
    """The autocast region for a forward pass (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` is the device or the machine running out of memory: MemoryError, torch's
    OutOfMemoryError (CUDA), or the RuntimeError of the CPU allocator ("can't allocate memory")
    or of MPS ("out of memory")."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)
