"""DePT (Zhang et al., CVPR 2024, Koorye/DePT): decoupled prompt tuning as a plug-in of any learner.

DePT adds a head (``learners/heads.py``: channel-wise transforms of the image and class text features and
a linear classifier of the base classes) and trains it beside the learner's prompts:

    L = (1 - w) * CE(learner's logits, y) + w * CE(head over [cwT(t_y); cwT(f)], [y; y])

with w = 0.7 and the head's tensors at 6.5 x the learning rate. The trainer already adds CE(learner's
logits), so this term is w * (CE_head - CE_learner), which makes the total exactly DePT's. At test time the
head makes the learner split-aware: base-class images (told "base") are scored by
(1 - w) * learner logits + w * head logits, new-class images and untold ones by the learner alone.

It is a regularizer because it composes by capability like one (``coop+dept``), but it owns trained
tensors: ``setup`` attaches the head to the learner, so they are optimised, checkpointed, saved in the
artifact and used by the learner's own classifier path like the learner's tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.heads import DePTHead
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register_regularizer


@dataclass
class DePTConfig(Options):
    owner = "dept"
    weight: float = option(0.7, "w: the head's share of the training loss and of the base-class logits "
                                "(DePT's TRAINER.LINEAR_PROBE.WEIGHT, 0.7)")
    lr_multiplier: float = option(6.5, "the head's learning rate over train.lr after warm-up (DePT's "
                                       "OPTIM.LR_EXP, 6.5)")
    channel_transform: bool = option(True, "the channel-wise scale and shift (cwT) before the linear head "
                                           "(DePT's TRAINER.FILM.LINEAR_PROBE, on)")

    def validate(self) -> None:
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"dept.weight={self.weight} must lie in [0, 1] (DePT uses 0.7)")
        if self.lr_multiplier <= 0:
            raise ConfigError(f"dept.lr_multiplier={self.lr_multiplier} must be positive (DePT uses 6.5)")


@register_regularizer
class DePT(Regularizer):
    """Decoupled prompt tuning: a linear head of the base classes, fused with the learner's for base images.

    The head (channel-wise transforms, then a linear classifier) trains beside the prompts; new-class and
    untold test images are scored by the learner alone."""

    name = "dept"
    Config = DePTConfig
    #: trained tensors to tune beside the head, and a learner that also scores new classes (their path)
    requires = frozenset({Capability.LEARNED_PROMPTS, Capability.NEW_CLASSES})

    def setup(self, ctx: TrainContext) -> None:
        learner, cfg = ctx.learner, self.config
        if isinstance(learner.head, DePTHead):  # a resumed fit of the same learner keeps its head
            return
        learner.attach_head(DePTHead(learner.backbone.embed_dim, learner.classnames, weight=cfg.weight,
                                     lr_multiplier=cfg.lr_multiplier, channel_transform=cfg.channel_transform))

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        head = ctx.learner.head
        # the towers' raw outputs, as the official head reads them, where the learner exposes them
        raw = outputs.raw_image_features is not None and outputs.raw_text_features is not None
        image = outputs.raw_image_features if raw else outputs.image_features
        text = outputs.raw_text_features if raw else outputs.text_features
        ce_head = head.training_loss(image, text, labels)
        ce_learner = F.cross_entropy(outputs.logits.float(), labels)
        return {"dept": self.config.weight * (ce_head - ce_learner)}
