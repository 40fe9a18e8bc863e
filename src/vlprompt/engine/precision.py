"""Numeric precision of a run.

``train.precision`` is the autocast precision of the forward pass: fp32, bf16 (autocast), or fp16
(autocast with a gradient scaler, so small fp16 gradients do not flush to zero). The learned prompt
tensors and the optimizer state stay fp32 either way. ``backbone.precision`` is the storage precision
of the frozen towers (the reference keeps CLIP in fp16).
"""

from __future__ import annotations

import contextlib

import torch

from vlprompt.errors import check_choice

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device | str):
    check_choice("precision", precision, PRECISIONS)
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=DTYPES[precision])


#: the fp16 loss scale to start from: gradients reaching prompts through a whole text tower are large,
#: so PyTorch's default 2^16 overflows for several steps and the scaler skips them; 2^8 does not (test)
INIT_LOSS_SCALE = 2.0**8


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (a pass-through otherwise); it still grows the scale
    every 2000 steps without overflow and halves it on one."""
    return torch.amp.GradScaler(torch.device(device).type, init_scale=INIT_LOSS_SCALE,
                                enabled=precision == "fp16")
