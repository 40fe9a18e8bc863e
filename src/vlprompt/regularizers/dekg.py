"""DeKg's independence term (Li et al., ICLR 2025; cnunlp/DeKg `trainers/loss.py`, `trainers/DeKg.py`):
push the learned class text features towards statistical independence from the frozen hand-crafted
ones, so that tuning can move away from the pre-training bias that KgCoOp's pull keeps.

    HSIC(T, C) = tr(H K_T H K_C),  K_T = T' T'^T,  K_C = C' C'^T,  H = I - 1/K
    T' = T / ||T||_F,  C' = C / ||C||_F

T (K, D) are the learner's normalised class text features and C the frozen model's features of the
KgCoOp templates. DeKg itself is CE + w1 * KgCoOp's term + w2 * HSIC: in vlprompt `kgcoop` + `dekg`
(preset `dekg-b2n-vitb16`), each term in its own regularizer.
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


def hsic(learned: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
    """tr(H K_T H K_C) of the two (K, D) feature sets, each scaled to unit Frobenius norm (linear kernels)."""
    learned, frozen = learned / learned.norm(), frozen / frozen.norm()
    k = learned.shape[0]
    centre = torch.eye(k, device=learned.device, dtype=learned.dtype) - 1.0 / k
    return torch.trace(centre @ (learned @ learned.T) @ centre @ (frozen @ frozen.T))


@dataclass
class DeKgConfig(Options):
    owner = "dekg"
    weight: float = option(6.0, "w2 on the HSIC term (DeKg's scripts/run.sh: 6.0 on every dataset)")

    def validate(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"dekg.weight={self.weight} must be non-negative (DeKg's scripts use 6.0)")


@register_regularizer
class DeKg(Regularizer):
    """HSIC between the learned and the frozen hand-crafted class text features, minimised."""

    name = "dekg"
    Config = DeKgConfig
    requires = frozenset({Capability.LEARNED_TEXT})

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        frozen = ctx.zero_shot_text_features("kgcoop").float()
        text = outputs.text_features.float()
        if text.dim() == 3:  # per-image text features (CoCoOp): the term of each image, averaged (ours)
            value = torch.stack([hsic(t, frozen) for t in text]).mean()
        else:
            value = hsic(text, frozen)
        return {"dekg": self.config.weight * value}
