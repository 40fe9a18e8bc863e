"""ProGrad (methods.md §8): keep only the part of the cross-entropy gradient that does not conflict
with the zero-shot model's knowledge.

The "general direction" is the gradient of a distillation loss towards the frozen zero-shot model
(T^2 times the soft-target cross-entropy at temperature T, whose gradient equals the KL's). Per
learnable tensor, when the cross-entropy gradient G_ce points against it (negative cosine), its
component along the general direction is removed (scaled by lambda); otherwise G_ce is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register

KL_LOSS = "prograd_kl"
EPS = 1e-12  # upstream divides by the norms unguarded; a zero gradient would give NaN


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over the batch of -sum_k softmax(z_t/T)_k log softmax(z_s/T)_k."""
    target = F.softmax(teacher_logits / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean() * temperature**2


def project_gradient(g_ce: torch.Tensor, g_general: torch.Tensor, lam: float) -> torch.Tensor:
    """G_ce - lam * <G_ce, g^> g^ with g^ = G_general/|G_general| when the two conflict, else G_ce."""
    flat_ce, flat_g = g_ce.flatten().double(), g_general.flatten().double()
    norm_g = flat_g.norm()
    unit = flat_g / (norm_g + EPS)
    cosine = (flat_ce / (flat_ce.norm() + EPS)) @ unit
    if cosine >= 0:
        return g_ce
    return (flat_ce - lam * (flat_ce @ unit) * unit).to(g_ce.dtype).view_as(g_ce)


def prograd_context_init(backbone: Backbone, template: str, n_ctx: int = 16) -> tuple[torch.Tensor, str]:
    """ProGrad's initialisation (§8.3): (n_ctx - k) zero vectors, then the embeddings of the first k
    BPE tokens of the template's prefix (k = its whitespace word count); returns (ctx, placeholder)."""
    prefix = template.replace(" {}.", "").replace("{}.", "").replace("{}", "").strip()
    k = len(prefix.split())
    if k > n_ctx:
        raise ConfigError(f"the template prefix {prefix!r} has {k} words, more than n_ctx={n_ctx}")
    with torch.no_grad():
        words = backbone.text.embed(backbone.tokenize([prefix]))[0, 1 : 1 + k]
    ctx = torch.cat([torch.zeros(n_ctx - k, backbone.text.width), words])
    placeholder = " ".join(["X"] * (n_ctx - k) + [prefix])
    return ctx, placeholder


@register
class ProGrad(Regularizer):
    name = "prograd"
    applies_to = ("coop", "cocoop", "maple")
    wants_loss_gradients = True

    def __init__(self, lambda_: float = 1.0, temperature: float = 1.0):
        if not 0 <= lambda_ <= 1:
            raise ConfigError(f"prograd.lambda_={lambda_} must be in [0, 1] (1: full projection, 0: plain CE)")
        if temperature <= 0:
            raise ConfigError(f"prograd.temperature={temperature} must be positive")
        self.lambda_ = lambda_
        self.temperature = temperature

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        teacher_text = ctx.zero_shot_text_features("prograd")
        with torch.no_grad():
            teacher = ctx.learner.backbone.logit_scale * outputs.image_features.float() @ teacher_text.t()
        return {KL_LOSS: distillation_loss(outputs.logits.float(), teacher, self.temperature)}

    def transform_gradients(self, ctx, per_loss_grads):
        """Project the CE gradient per tensor; other regularizers' losses keep their gradients; the KL
        loss itself only supplies the direction and is not descended."""
        combined = {}
        for name, g_ce in per_loss_grads["ce"].items():
            g = project_gradient(g_ce, per_loss_grads[KL_LOSS][name], self.lambda_)
            for loss_name, grads in per_loss_grads.items():
                if loss_name not in ("ce", KL_LOSS):
                    g = g + grads[name]
            combined[name] = g
        return combined
