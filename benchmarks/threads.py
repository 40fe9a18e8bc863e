"""The thread count of a benchmark: chosen by ``--threads``, set before any work and printed with the result.

Timings depend on it more than on anything else: on a machine shared with other processes, runs
with PyTorch's default (one thread per core) were 10-40x slower than with one thread per process,
so a number without its thread count cannot be compared.
"""

from __future__ import annotations

import os

import torch


def add_threads_argument(parser) -> None:
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch (intra-op, OpenMP) threads (default: the cores this process may use)")


def set_threads(count: int) -> str:
    """Set torch's thread count and return the note to print with the measurements."""
    torch.set_num_threads(count)
    load = os.getloadavg()[0]
    return (f"torch threads: {torch.get_num_threads()} (--threads; {os.cpu_count()} cores, load average "
            f"{load:.1f} at start: other work on the cores slows every timing)")
