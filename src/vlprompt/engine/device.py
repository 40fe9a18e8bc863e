"""Which device a run uses: ``train.device = auto | cpu | cuda | cuda:N | mps`` (auto: CUDA when present).

Everything a step computes lives on that device; files on disk (features, checkpoints, artifacts)
stay device-independent and are moved on load.
"""

from __future__ import annotations

import re

import torch

from vlprompt.errors import ConfigError

_CUDA_INDEX = re.compile(r"cuda:(\d+)")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def check_device_name(name: str) -> None:
    """Refuse a spelling that is none of the choices (without asking whether the device exists)."""
    if name not in ("auto", "cpu", "cuda", "mps") and not _CUDA_INDEX.fullmatch(str(name)):
        raise ConfigError(f"train.device={name!r} is not valid; choose one of: {DEVICE_CHOICES}")


def resolve_device(name: str) -> torch.device:
    """The torch device for a setting, refusing one this machine does not have."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine; "
                              "use train.device=auto or cpu")
        match = _CUDA_INDEX.fullmatch(name)
        if match and int(match.group(1)) >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name!r} but this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s): use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device='mps' but Apple's MPS backend is not available; use auto or cpu")
    return torch.device(name)


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on ``device`` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
