"""One run on several processes, started by ``torchrun`` (or ``vlprompt train --nproc N``).

Every rank holds the same learner and sees the same batches; each takes a contiguous share of every
batch, its losses weighted by its share of the batch, and the gradients of the learned tensors are
summed across ranks before the update, so every rank takes the step of the whole batch. The learned
tensors are a few small prompt tensors, so one all-reduce per step of exactly those replaces
DistributedDataParallel's bucketing, and per-loss gradients (ProGrad) can be reduced before their
projection. Rank 0 alone writes files (run directory, caches, checkpoints); the others read them.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, number of ranks); (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def launched_by_torchrun() -> bool:
    """True in a process torchrun started (it describes the group in the environment), even a group of one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes and return this rank's device: its own GPU (LOCAL_RANK)
    with NCCL on CUDA, the given device with gloo otherwise. A group of one process (``torchrun
    --nproc-per-node 1``) joins too, so that a launch on one GPU takes the path of several."""
    if not launched_by_torchrun():
        return device
    cuda = device.type == "cuda"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    log.info("process %d of %d joined the process group (backend %s) on %s", dist.get_rank(), dist.get_world_size(),
             dist.get_backend(), device)
    return device


def leave() -> None:
    """Leave the process group this process joined (NCCL warns at exit about a group left open)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int) -> slice:
    """This rank's contiguous share of n batch rows (sizes differ by at most one)."""
    rank, size = world()
    return slice(n * rank // size, n * (rank + 1) // size)


def all_reduce_sum_(tensors) -> None:
    """Sum each tensor over the ranks, in place (nothing outside a distributed run)."""
    if world()[1] > 1:
        for tensor in tensors:
            dist.all_reduce(tensor)


@contextmanager
def main_first():
    """Rank 0 runs the block first (writing what it computes, e.g. a feature cache); then the other ranks
    run it and find the files."""
    distributed = world()[1] > 1
    if distributed and not is_main():
        dist.barrier()
    yield
    if distributed and is_main():
        dist.barrier()
