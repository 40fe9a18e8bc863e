"""CLIP-Adapter (Gao et al., IJCV 2024; gaopengcuhk/CLIP-Adapter): a residual bottleneck MLP on the
frozen image feature, scored against the frozen hand-crafted class text features.

    f' = r * relu(W2 relu(W1 f)) + (1 - r) * f,    logits = s * normalize(f') @ normalize(t)^T

``f`` is the image tower's unnormalised output, as in the official forward; W1 is (D/reduction, D)
and W2 its transpose shape, both without bias. The text side is zero-shot CLIP's, so the adapter
serves any class list, but its scores are not one linear map of the frozen image feature: it cannot
be exported as a plain classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import register_learner
from vlprompt.learners.zeroshot import ZeroShotCLIP, ZeroShotConfig
from vlprompt.options import option


@dataclass
class CLIPAdapterConfig(ZeroShotConfig):
    owner = "clip_adapter"
    ratio: float = option(0.2, "residual ratio r: the share of the adapted feature (the official code's 0.2)")
    reduction: int = option(4, "bottleneck reduction: the hidden width is D // reduction (official: 4)")

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"clip_adapter.ratio={self.ratio} must lie in [0, 1]")
        if self.reduction < 1:
            raise ConfigError(f"clip_adapter.reduction={self.reduction} must be at least 1")


@register_learner
class CLIPAdapter(ZeroShotCLIP):
    """Zero-shot CLIP's class text features with a trained residual adapter on the image feature."""

    name = "clip_adapter"
    Config = CLIPAdapterConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.FIXED_IMAGE_FEATURES, Capability.NEW_CLASSES})

    def __init__(self, backbone: Backbone, classnames: list[str], config: CLIPAdapterConfig | None = None, **options):
        super().__init__(backbone, classnames, config, **options)
        width = backbone.embed_dim
        hidden = width // self.config.reduction
        if hidden < 1:
            raise ConfigError(f"clip_adapter.reduction={self.config.reduction} leaves no hidden unit for "
                              f"features of width {width}; use reduction <= {width}")
        self.adapter = nn.Sequential(nn.Linear(width, hidden, bias=False), nn.ReLU(),
                                     nn.Linear(hidden, width, bias=False), nn.ReLU())

    def adapt_image_features(self, features: torch.Tensor) -> torch.Tensor:
        r = self.config.ratio
        features = features.to(self.adapter[0].weight.dtype)
        return F.normalize(r * self.adapter(features) + (1 - r) * features, dim=-1)
