"""MMRL's training objective beyond the trainer's cross-entropy (docs/methods/mmrl.md).

MMRL (``trainers/mmrl.py``, ``MMRL_Loss``) trains on
  alpha · CE(class-token logits) + (1 − alpha) · CE(representation logits)
  + w · (1 − mean_b cos(f_b, f_b^zs)) + w · (1 − mean_k cos(t_k, t_k^zs)),
with f^zs the frozen model's image features of the batch and t^zs its class text features of the same
hand-crafted prompts the learner reads. The trainer contributes CE(class-token logits) with weight 1
(the learner's training logits), so this regularizer adds (1 − alpha) · (CE(rep) − CE(class-token)),
which makes the sum exactly MMRL's mix, and the two cosine terms. The text term is KgCoOp's knowledge
gap (its function, composed) towards the learner's own frozen features: KgCoOp's template table differs
from the dataset template MMRL reads on DTD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput
from vlprompt.learners.capabilities import Capability
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.kgcoop import knowledge_gap
from vlprompt.regularizers.registry import register_regularizer


@dataclass
class MMRLLossConfig(Options):
    owner = "mmrl_loss"
    weight: float = option(1.0, "w on each cosine term towards the frozen features (MMRL's REG_WEIGHT: 1.0 by "
                                "default, per dataset from 0.01 to 7.0 in its configs; the mmrl presets list them)")

    def validate(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"mmrl_loss.weight={self.weight} must be non-negative (MMRL's default is 1.0)")


@register_regularizer
class MMRLLoss(Regularizer):
    """MMRL's representation-logit CE share and its pulls of image and text features to the frozen model."""

    name = "mmrl_loss"
    Config = MMRLLossConfig
    requires = frozenset({Capability.REPRESENTATION_LOGITS, Capability.PROMPTED_IMAGE_TOWER})

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        learner, labels = ctx.learner, batch["labels"]
        alpha = learner.alpha
        class_ce = F.cross_entropy(outputs.extras["class_token_logits"].float(), labels)
        rep_ce = F.cross_entropy(outputs.extras["representation_logits"].float(), labels)
        with torch.no_grad():
            frozen_image = F.normalize(learner.backbone.encode_image(batch["images"]).float(), dim=-1)
        image_gap = 1 - F.cosine_similarity(outputs.image_features.float(), frozen_image, dim=-1).mean()
        text_gap = knowledge_gap(outputs.text_features.float(), learner.frozen_text.float())
        return {"mmrl_loss_rep": (1 - alpha) * (rep_ce - class_ce),
                "mmrl_loss_image": self.config.weight * image_gap,
                "mmrl_loss_text": self.config.weight * text_gap}
