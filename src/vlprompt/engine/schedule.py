"""The reference learning-rate schedule (Dassl): constant warm-up, then cosine, stepped per epoch.

For 0-indexed epoch e, W warm-up epochs and T = max_epochs:
lr(e) = warmup_lr for e < W, else base_lr * (1 + cos(pi * (e - W) / T)) / 2 (methods.md §1.2).
A pure function of the epoch, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math


def lr_at_epoch(epoch: int, base_lr: float, max_epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    if epoch < warmup_epochs:
        return warmup_lr
    return base_lr * (1 + math.cos(math.pi * (epoch - warmup_epochs) / max_epochs)) / 2
