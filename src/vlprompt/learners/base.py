"""What every prompt learner is: trainable prompt state that turns into CLIP logits.

The trainer and the regularizers only use this interface: logits and features for a batch, the
learnable tensors by name, the class list, and whether the image tower is touched (if not, image
features can be cached once instead of being recomputed every step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone


@dataclass
class LearnerOutput:
    """Logits (B, K) plus the normalised features regularizers read."""

    logits: torch.Tensor
    image_features: torch.Tensor  # (B, D), normalised
    text_features: torch.Tensor  # (K, D) or (B, K, D) for per-image prompts, normalised


class PromptLearner(nn.Module):
    """Base class: subclasses set ``name`` and implement ``class_text_features`` and the option record."""

    name: ClassVar[str] = ""
    uses_image_tower: ClassVar[bool] = False  # True: learner changes the image encoder (no feature cache)
    image_conditioned: ClassVar[bool] = False  # True: text features depend on the image (per-image prompts)

    def __init__(self, backbone: Backbone, classnames: list[str]):
        super().__init__()
        self.backbone = backbone
        self.classnames = list(classnames)

    # -- interface -------------------------------------------------------------------------
    def options(self) -> dict:
        """The constructor options that rebuild this learner (saved in artifacts)."""
        raise NotImplementedError

    def set_classnames(self, classnames: list[str]) -> None:
        """Rebuild everything that depends on the class list (learned tensors are kept)."""
        raise NotImplementedError

    def text_features(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised class text features (K, D); per-image learners return (B, K, D)."""
        raise NotImplementedError

    def learnable_tensors(self) -> dict[str, nn.Parameter]:
        """Trained tensors by name: what is saved, optimised and seen by regularizers."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("backbone.")}

    # -- shared behaviour ------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone.encode_image(images), dim=-1)

    def forward(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None) -> LearnerOutput:
        """Logits for a batch given either images or precomputed (unnormalised) image features."""
        if features is None:
            if images is None:
                raise ValueError("pass images or features")
            image_features = self.encode_images(images)
        else:
            image_features = F.normalize(features, dim=-1)
        text = self.text_features(image_features)
        scale = self.backbone.logit_scale
        if text.dim() == 3:
            logits = scale * torch.einsum("bd,bkd->bk", image_features, text)
        else:
            logits = scale * image_features @ text.t()
        return LearnerOutput(logits=logits, image_features=image_features, text_features=text)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.train(False)
        return self
