"""Heads: trained tensors that a plug-in method attaches to any learner to change its base-class logits.

A head sits after the learner's own classifier: ``PromptLearner.forward`` hands it the learner's logits,
the image features they came from (the tower's raw output where the learner exposes it, as
``PromptLearner.exposes_tower_outputs`` says; the normalised feature otherwise) and the split the
evaluation told the learner (None when not told, and always during training). A head is built for the
classes it was trained on; it adds the ``split_aware_inference`` capability to its learner. Heads are
rebuilt from artifacts by the fixed name table ``HEADS`` (a file never chooses code).

DePT (Zhang et al., CVPR 2024, "DePT: Decoupled Prompt Tuning"): a channel-wise transform of the image and
of the class text features (cwT, a learned scale and shift per channel, from 1 and 0) feeding a linear
classifier of the base classes. Training adds the head's cross-entropy on the transformed image features
and on the transformed text features of the images' labels (a batch of 2B rows); test images of the base
classes are scored by ``(1 - w) * clip_logits + w * head_logits``, new-class and untold images by the
learner's logits alone.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.learners.base import class_order
from vlprompt.learners.capabilities import Capability


class ChannelTransform(nn.Module):
    """x -> scale * x + shift, one learned scale (from 1) and shift (from 0) per channel: DePT's cwT."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale.to(x.dtype) * x + self.shift.to(x.dtype)


class DePTHead(nn.Module):
    """DePT's channel-importance transforms and linear classifier of the trained (base) classes."""

    name: ClassVar[str] = "dept"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SPLIT_AWARE})

    def __init__(self, dim: int, classnames: list[str], weight: float = 0.7, lr_multiplier: float = 6.5,
                 channel_transform: bool = True):
        super().__init__()
        self.trained_classes = list(classnames)
        self.weight, self.lr_multiplier, self.channel_transform = weight, lr_multiplier, channel_transform
        if channel_transform:
            self.image_transform, self.text_transform = ChannelTransform(dim), ChannelTransform(dim)
        self.linear = nn.Linear(dim, len(classnames))  # torch's default init, as the official nn.Linear

    def options(self) -> dict:
        return {"weight": self.weight, "lr_multiplier": self.lr_multiplier,
                "channel_transform": self.channel_transform}

    def head_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """The linear classifier's logits (B, K_trained) of transformed image features."""
        if self.channel_transform:
            image_features = self.image_transform(image_features)
        return self.linear(image_features.to(self.linear.weight.dtype)).float()

    def training_loss(self, image_features: torch.Tensor, text_features: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the head on the 2B rows [transformed text features of the labels; transformed
        image features], each row labelled with its image's class. ``text_features`` are (K, D), or
        (B, K, D) for per-image prompts (each image then gives its own label's row)."""
        if text_features.dim() == 3:
            rows = text_features[torch.arange(len(labels), device=labels.device), labels]
        else:
            rows = text_features[labels]
        if self.channel_transform:
            rows = self.text_transform(rows)
            image_features = self.image_transform(image_features)
        logits = self.linear(torch.cat([rows, image_features]).to(self.linear.weight.dtype)).float()
        return F.cross_entropy(logits, torch.cat([labels, labels]))

    def adjust(self, logits: torch.Tensor, image_features: torch.Tensor, classnames: list[str],
               split: str | None) -> torch.Tensor:
        """Told "base": DePT's fusion of the learner's and the head's logits (the head's rows put in the order
        of ``classnames``, which must be the trained classes); otherwise the learner's logits unchanged."""
        if split != "base":
            return logits
        order = class_order(self.trained_classes, classnames, "the DePT head").to(logits.device)
        head = self.head_logits(image_features)[:, order]
        return (1 - self.weight) * logits + self.weight * head


#: heads by the name their artifacts record
HEADS: dict[str, type[nn.Module]] = {DePTHead.name: DePTHead}
