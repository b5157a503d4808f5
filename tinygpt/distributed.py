"""Data-parallel training on PyTorch's own engine: torchrun starts the processes, torch.distributed
connects them (gloo on CPU, NCCL on CUDA), DistributedDataParallel averages the gradients.

`torchrun --nproc_per_node=N -m tinygpt train ...` starts N copies of the same command; torchrun
tells each its place in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Every
copy ("rank") holds the whole model and takes its own slice of each global batch; after the
backward pass DDP all-reduces the gradients, so every rank applies the same averaged gradient and
the weights stay identical. train.py calls what is here; nothing here knows about models.

Every decision that depends on a clock or a signal must be the same on every rank, or one rank
waits forever in a collective the others never reach: hence `Group.clock` (rank 0's clock, sent
to all) and `Group.any` (a stop asked on any rank stops every rank).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def launched_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launched_rank() -> int:
    """RANK as set by torchrun (0 when not launched by it): known before any group is joined, so a
    command line can leave error messages to rank 0."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


@dataclass(frozen=True)
class Group:
    """This process's place among the processes training one model (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, history and the progress bar."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def clock(self, local_clock):
        """A clock that reads the same on every rank: rank 0's `local_clock`, broadcast. Every rank
        must call it the same number of times, in the same order (it is a collective)."""
        if not self.parallel:
            return local_clock

        def shared() -> float:
            t = _on_backend(torch.tensor([local_clock() if self.is_main else 0.0], dtype=torch.float64))
            dist.broadcast(t, src=0)
            return float(t.item())

        return shared

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (a collective)."""
        if not self.parallel:
            return bool(flag)
        t = _on_backend(torch.tensor([1 if flag else 0], dtype=torch.int32))
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks, the same on every rank (a collective)."""
        if not self.parallel:
            return value
        t = _on_backend(torch.tensor([value], dtype=torch.float64))
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def from_main(self, obj):
        """Rank 0's `obj` (picklable), on every rank."""
        if not self.parallel:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """[rank 0's obj, rank 1's, ...] on every rank."""
        if not self.parallel:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.parallel:
            dist.barrier()


def _on_backend(t: torch.Tensor) -> torch.Tensor:
    """NCCL moves only CUDA tensors; gloo, CPU ones."""
    if dist.get_backend() == "nccl":
        return t.to(f"cuda:{torch.cuda.current_device()}")
    return t


def current() -> Group:
    """The group this process belongs to: from torch.distributed once initialised, else alone."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Group()


@contextlib.contextmanager
def process_group(device: torch.device):
    """Join the processes torchrun started (when it started more than one) for the duration;
    yields (Group, device): the device is cuda:LOCAL_RANK for a CUDA run, one GPU a process.

    A group initialised by the caller is used as it is and left open. One this opens is closed
    after a barrier, so no rank tears down its connections while another still talks to it."""
    if launched_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        group = current()
        if group.parallel and device.type == "cuda":
            device = torch.device("cuda", group.local_rank)
        yield group, device
        return
    if not dist.is_available():
        raise RuntimeError("this PyTorch has no torch.distributed: train in one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise ValueError(f"data-parallel training runs on cpu (gloo) or cuda (NCCL), not {device.type}")
    try:
        yield current(), device
    except BaseException:
        # no barrier: the other ranks may be inside another collective; torchrun stops them
        # when this process exits with an error
        dist.destroy_process_group()
        raise
    dist.barrier()  # every rank is done with every collective before any connection closes
    dist.destroy_process_group()
