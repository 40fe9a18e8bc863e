"""KgCoOp (methods.md §5): pull the learned class text features towards the hand-crafted ones, so
the tuned prompts keep the frozen model's general knowledge.

L = w * (1 - mean_k cos(t_k, w_k^clip)), with w_k^clip the frozen model's feature of the class's
KgCoOp template (§1.6); per-image text features (CoCoOp) are averaged over the batch too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput
from vlprompt.learners.capabilities import Capability
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.registry import register_regularizer


def knowledge_gap(text_features: torch.Tensor, hand_crafted: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine between learned features (K, D) or (B, K, D) and hand-crafted ones (K, D).

    Both are L2-normalised (the LearnerOutput contract), so the cosine is the dot product.
    """
    return 1 - (text_features * hand_crafted).sum(-1).mean()


@dataclass
class KgCoOpConfig(Options):
    owner = "kgcoop"
    weight: float = option(8.0, "loss weight w (KgCoOp's scripts use 8.0)")

    def validate(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"kgcoop.weight={self.weight} must be non-negative (KgCoOp's scripts use 8.0)")


@register_regularizer
class KgCoOp(Regularizer):
    name = "kgcoop"
    Config = KgCoOpConfig
    requires = frozenset({Capability.LEARNED_TEXT})

    def __init__(self, config: KgCoOpConfig | None = None, **options):
        super().__init__(config, **options)
        self.weight = self.config.weight

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        hand_crafted = ctx.zero_shot_text_features("kgcoop")
        return {"kgcoop": self.weight * knowledge_gap(outputs.text_features.float(), hand_crafted)}
