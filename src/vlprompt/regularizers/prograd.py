"""ProGrad (methods.md §8): keep only the part of the cross-entropy gradient that does not conflict
with the zero-shot model's knowledge.

The "general direction" is the gradient of a distillation loss towards the frozen zero-shot model
(T^2 times the soft-target cross-entropy at temperature T, whose gradient equals the KL's). Per
learnable tensor, when the cross-entropy gradient G_ce points against it (negative cosine), its
component along the general direction is removed (scaled by lambda); otherwise G_ce is kept. The
distillation loss only supplies that direction: it is never descended itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput, clip_logits
from vlprompt.learners.capabilities import Capability
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register_regularizer

KL_LOSS = "prograd_kl"
#: floor of the norms divided by; upstream divides unguarded, so a zero gradient gave NaN (documented deviation)
EPS = 1e-12


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over the batch of -sum_k softmax(z_t/T)_k log softmax(z_s/T)_k."""
    target = F.softmax(teacher_logits / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean() * temperature**2


def project_gradient(g_ce: torch.Tensor, g_general: torch.Tensor, lam: float) -> torch.Tensor:
    """G_ce - lam * <G_ce, g^> g^ with g^ = G_general/|G_general| when the two conflict, else G_ce.

    Computed on the flattened tensors in float64 so the projection is orthogonal to rounding error.
    """
    flat_ce, flat_g = g_ce.flatten().double(), g_general.flatten().double()
    unit = flat_g / flat_g.norm().clamp_min(EPS)
    cosine = (flat_ce / flat_ce.norm().clamp_min(EPS)) @ unit
    if cosine >= 0:
        return g_ce
    return (flat_ce - lam * (flat_ce @ unit) * unit).to(g_ce.dtype).view_as(g_ce)


@dataclass
class ProGradConfig(Options):
    owner = "prograd"
    lambda_: float = option(1.0, "how much of the conflicting component is removed (1: all, 0: plain CE)")
    temperature: float = option(1.0, "distillation temperature T of the general direction")

    def validate(self) -> None:
        if not 0 <= self.lambda_ <= 1:
            raise ConfigError(f"prograd.lambda_={self.lambda_} must be in [0, 1] (1: full projection, 0: plain CE)")
        if self.temperature <= 0:
            raise ConfigError(f"prograd.temperature={self.temperature} must be positive")


@register_regularizer
class ProGrad(Regularizer):
    """Projects the CE gradient against the zero-shot teacher's; learners with learned text prompts."""

    name = "prograd"
    Config = ProGradConfig
    requires = frozenset({Capability.LEARNED_TEXT})
    wants_loss_gradients = True

    def __init__(self, config: ProGradConfig | None = None, **options):
        super().__init__(config, **options)
        self.lambda_ = self.config.lambda_
        self.temperature = self.config.temperature

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        """The distillation loss against the frozen model's "prograd"-template logits on the same images."""
        teacher_text = ctx.zero_shot_text_features("prograd")
        with torch.no_grad():
            teacher = clip_logits(outputs.image_features.float(), teacher_text, ctx.learner.backbone.logit_scale)
        return {KL_LOSS: distillation_loss(outputs.logits.float(), teacher, self.temperature)}

    def transform_gradients(self, ctx: TrainContext, per_loss_grads: dict[str, dict[str, torch.Tensor]]
                            ) -> dict[str, torch.Tensor]:
        """Projected CE gradient plus the unchanged gradients of other regularizers' losses."""
        others = [grads for loss, grads in per_loss_grads.items() if loss not in ("ce", KL_LOSS)]
        combined = {}
        for name, g_ce in per_loss_grads["ce"].items():
            projected = project_gradient(g_ce, per_loss_grads[KL_LOSS][name], self.lambda_)
            combined[name] = sum((grads[name] for grads in others), projected)
        return combined
