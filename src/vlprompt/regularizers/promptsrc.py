"""PromptSRC (methods.md §6): keep the prompted model close to the frozen one, and average the prompts over epochs.

Self-regulating losses, as PromptSRC's ``trainers/promptsrc.py`` computes them:
L_SCL = λ_text · L1(t̂, t̂^zs) + λ_image · L1(f̂, f̂^zs) + λ_kl · KL(p^zs ‖ p), where
- t̂^zs is the frozen model's text feature of each class, the mean of its *unnormalised* features over
  the teacher templates (PromptSRC's 60 ImageNet templates), then normalised;
- f̂^zs is the frozen model's normalised image feature; learners whose image features are the frozen
  ones (CoOp, CoCoOp) make that term identically zero, so it is left out for them;
- p = softmax of the prompted logits, p^zs = softmax(s · f̂^zs · t̂^zs), and the KL divergence is summed
  over all B × K elements and divided by B × K (temperature 1);
- each L1 is the mean absolute difference over all elements.

Gaussian prompt aggregation (GPA): after epoch e (1-based) the learned tensors are added to a running
sum with weight g(e) = N(e; μ, σ) / Σ_{a=1..E} N(a; μ, σ); after the last epoch the learner takes the
sum. The sum is part of the regularizer's state, so a resumed run aggregates the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput, clip_logits
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.zeroshot import class_prompt
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register_regularizer


@torch.no_grad()
def teacher_text_features(backbone: Backbone, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """Normalised (K, D) mean over templates of the frozen model's unnormalised class text features.

    PromptSRC averages before normalising, unlike CoOp's prompt ensemble (``zero_shot_text_features``),
    which averages normalised features.
    """
    if not templates:
        raise ConfigError("promptsrc needs at least one teacher template, e.g. 'a photo of a {}.'")
    total = sum(backbone.encode_text([class_prompt(t, c) for c in classnames]).float() for t in templates)
    return F.normalize(total / len(templates), dim=-1)


def mean_l1(features: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over all elements; per-image text features (B, K, D) against (K, D) broadcast."""
    return (features - frozen).abs().mean()


def kl_to_teacher(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) ‖ softmax(logits)) summed over all elements and divided by their number."""
    total = F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(teacher_logits, dim=-1),
                     reduction="sum", log_target=True)
    return total / logits.numel()


def gpa_weights(epochs: int, mean: float, std: float) -> torch.Tensor:
    """g(1..E) as float64: N(e; mean, std) normalised over the epochs e = 1..E.

    Computed as a softmax of the Gaussian's exponent, which equals the normalised density (its
    constant factor cancels) and stays finite when every epoch lies far in the tail.
    """
    e = torch.arange(1, epochs + 1, dtype=torch.float64, device="cpu")  # host-side scalars
    return torch.softmax(-0.5 * ((e - mean) / std) ** 2, dim=0)


@dataclass
class PromptSRCConfig(Options):
    """Defaults: PromptSRC's base-to-new config (``vit_b16_c2_ep20_batch4_4+4ctx``) and trainer."""

    owner = "promptsrc"
    text_weight: float = option(25.0, "λ_text on L1(prompted, frozen) text features (TEXT_LOSS_WEIGHT)")
    image_weight: float = option(10.0, "λ_image on L1(prompted, frozen) image features (IMAGE_LOSS_WEIGHT); "
                                       "unused by learners that keep the image features frozen")
    kl_weight: float = option(1.0, "λ_kl on KL(zero-shot ‖ prompted) class probabilities (1 in the official code)")
    templates: Literal["promptsrc", "ensemble", "coop", "prograd", "kgcoop"] = option(
        "promptsrc", "templates of the frozen teacher's text features: 'promptsrc' = its 60 ImageNet templates")
    gpa: bool = option(True, "Gaussian prompt aggregation of the learned tensors over epochs")
    gpa_mean: float = option(15.0, "μ of the GPA weights, a 1-based epoch (GPA_MEAN)")
    gpa_std: float = option(1.0, "σ of the GPA weights, in epochs (GPA_STD)")

    def validate(self) -> None:
        for name in ("text_weight", "image_weight", "kl_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"promptsrc.{name}={getattr(self, name)} must be non-negative")
        if self.gpa_std <= 0:
            raise ConfigError(f"promptsrc.gpa_std={self.gpa_std} must be positive (PromptSRC's base-to-new "
                              "config uses 1)")


@register_regularizer
class PromptSRC(Regularizer):
    """Self-regulating losses against the frozen model and Gaussian prompt aggregation (PromptSRC, ICCV 2023)."""

    name = "promptsrc"
    Config = PromptSRCConfig
    requires = frozenset({Capability.LEARNED_TEXT})

    def __init__(self, config: PromptSRCConfig | None = None, **options):
        super().__init__(config, **options)
        self.teacher_text: torch.Tensor | None = None
        self.image_term = False
        self.aggregate: dict[str, torch.Tensor] = {}  # float64 running sums of g(e) * tensor
        self.aggregated_epochs: list[int] = []

    def setup(self, ctx: TrainContext) -> None:
        learner = ctx.learner
        self.teacher_text = teacher_text_features(learner.backbone, learner.classnames,
                                                  ctx.templates_of(self.config.templates))
        self.image_term = learner.uses_image_tower and self.config.image_weight > 0

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        cfg, backbone = self.config, ctx.learner.backbone
        teacher_text = self.teacher_text.to(outputs.text_features.device)
        image = outputs.image_features.float()
        losses = {}
        if cfg.text_weight > 0:
            losses["promptsrc_text"] = cfg.text_weight * mean_l1(outputs.text_features.float(), teacher_text)
        if self.image_term:
            if batch.get("images") is None:
                raise ConfigError(f"promptsrc: learner {ctx.learner.name!r} trains its image features, so the "
                                  "batches must carry images (not cached features)")
            with torch.no_grad():
                frozen = F.normalize(backbone.encode_image(batch["images"]).float(), dim=-1)
            losses["promptsrc_image"] = cfg.image_weight * mean_l1(image, frozen)
        else:
            frozen = image.detach()  # the learner's image features are the frozen model's
        if cfg.kl_weight > 0:
            teacher_logits = clip_logits(frozen, teacher_text, backbone.logit_scale)
            losses["promptsrc_kl"] = cfg.kl_weight * kl_to_teacher(outputs.logits.float(), teacher_logits)
        return losses

    @torch.no_grad()
    def on_epoch_end(self, ctx: TrainContext) -> dict:
        cfg = self.config
        if not cfg.gpa:
            return {}
        weight = float(gpa_weights(ctx.max_epochs, cfg.gpa_mean, cfg.gpa_std)[ctx.epoch])
        tensors = ctx.learner.learnable_tensors()
        for name, tensor in tensors.items():
            previous = self.aggregate.get(name)
            term = weight * tensor.detach().double()
            self.aggregate[name] = term if previous is None else previous.to(term.device) + term
        self.aggregated_epochs.append(ctx.epoch)
        if ctx.epoch == ctx.max_epochs - 1:
            missing = sorted(set(range(ctx.max_epochs)) - set(self.aggregated_epochs))
            if missing:
                raise ConfigError(f"promptsrc: GPA lacks epochs {[e + 1 for e in missing]} (the resumed checkpoint "
                                  "was written without GPA?); rerun from the start")
            for name, tensor in tensors.items():
                tensor.copy_(self.aggregate[name].to(tensor.dtype))
        return {"promptsrc_gpa_weight": weight}

    def state_dict(self) -> dict:
        return {"aggregate": {k: v.cpu() for k, v in self.aggregate.items()}, "epochs": list(self.aggregated_epochs)}

    def load_state_dict(self, state: dict) -> None:
        self.aggregate = dict(state.get("aggregate", {}))
        self.aggregated_epochs = list(state.get("epochs", []))
