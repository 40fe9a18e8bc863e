"""Numeric precision: fp32, or bf16 autocast on CPU and GPU."""

from __future__ import annotations

import contextlib

import torch

from vlprompt.errors import check_choice

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device | str):
    check_choice("precision", precision, PRECISIONS)
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
