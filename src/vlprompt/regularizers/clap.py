"""CLAP's class-adaptive constraint (Silva-Rodriguez et al., CVPR 2024; jusiro/CLAP `trainers/adapters.py`):
keep each class prototype near its zero-shot start, the more firmly the better zero-shot CLIP already
recognises that class.

    L = mean_k alpha_k * d(w_k, w_k^0),   d = ||w_k - w_k^0||^2  (or 1 - cos(w_k, w_k^0))
    alpha_k = mean over the training images of class k of softmax(zero-shot logits)_k

w_k are the learner's unnormalised prototypes and w_k^0 their zero-shot start (capability
`class_prototypes`, the `zslp` learner); alpha is computed once, on every cached view of the training
features, when training starts. ZS-LP with this term is CLAP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput, clip_logits
from vlprompt.learners.capabilities import Capability
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register_regularizer


def zero_shot_class_confidence(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K,) mean softmax probability of the true class over each class' samples (0 for a class without any)."""
    probs = logits.float().softmax(-1)
    onehot = F.one_hot(labels, num_classes).float()
    return (probs * onehot).sum(0) / onehot.sum(0).clamp(min=1)


def multipliers(confidence: torch.Tensor, rule: str) -> torch.Tensor:
    """alpha from the zero-shot confidences: CLAP's default uses them as they are; ``corrected`` rescales
    them to mean 1, ``constant`` gives every class their mean, ``balanced`` gives every class 1."""
    if rule == "balanced":
        return torch.ones_like(confidence)
    if rule == "corrected":
        return confidence * (len(confidence) / confidence.sum())
    if rule == "constant":
        return torch.full_like(confidence, float(confidence.mean()))
    return confidence


@dataclass
class CLAPConfig(Options):
    owner = "clap"
    distance: Literal["l2", "cosine"] = option("l2", "d: squared L2 distance (CLAP's experiments) or 1 - cosine")
    multipliers: Literal["class_adaptive", "corrected", "constant", "balanced"] = option(
        "class_adaptive", "alpha_k: zero-shot confidence per class (CLAP), rescaled to mean 1, its mean for every "
                          "class, or 1")
    weight: float = option(1.0, "a factor on the whole term (CLAP: 1)")

    def validate(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"clap.weight={self.weight} must be non-negative (CLAP uses 1)")


@register_regularizer
class CLAP(Regularizer):
    """Class-adaptive constraint of a linear probe's prototypes towards their zero-shot start."""

    name = "clap"
    Config = CLAPConfig
    requires = frozenset({Capability.CLASS_PROTOTYPES, Capability.FIXED_IMAGE_FEATURES})

    def __init__(self, config: CLAPConfig | None = None, **options):
        super().__init__(config, **options)
        self.alpha: torch.Tensor | None = None

    @torch.no_grad()
    def on_fit_start(self, ctx: TrainContext) -> None:
        """alpha from the zero-shot prototypes' logits on all cached training views (as CLAP's logits of
        its augmented training features before training)."""
        if ctx.train_features is None:
            raise ConfigError("clap needs the cached training features; it trains with frozen image features only")
        learner = ctx.learner
        views, n, dim = ctx.train_features.shape
        features = ctx.train_features.reshape(views * n, dim).to(learner.backbone.device)
        start = F.normalize(learner.zero_shot_prototypes.float(), dim=-1)
        logits = clip_logits(F.normalize(features.float(), dim=-1), start, learner.backbone.logit_scale)
        labels = ctx.train_labels.to(features.device).repeat(views)
        confidence = zero_shot_class_confidence(logits, labels, len(learner.classnames))
        self.alpha = multipliers(confidence, self.config.multipliers)

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        w, w0 = ctx.learner.prototypes.float(), ctx.learner.zero_shot_prototypes.float()
        if self.config.distance == "l2":
            gap = (w - w0).pow(2).sum(-1)
        else:
            gap = 1 - F.cosine_similarity(w, w0, dim=-1)
        return {"clap": self.config.weight * (self.alpha * gap).mean()}
