"""The regularizer hook protocol (DESIGN.md, "Regularizer hooks").

A regularizer overrides only the hooks it needs; the trainer calls every hook of every regularizer.
Needs that several regularizers share (zero-shot text features of the frozen model, say) are
computed once by the ``TrainContext``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput, PromptLearner
from vlprompt.learners.zeroshot import zero_shot_text_features


@dataclass
class TrainContext:
    """What a regularizer may read: the learner, the task, where training stands, shared needs.

    ``templates`` maps a template kind ("coop", "prograd", "kgcoop", "ensemble") to the dataset's
    hand-crafted templates of that kind (methods.md §1.6); the engine fills it from the dataset.
    """

    learner: PromptLearner
    dataset: str = ""
    templates: dict[str, list[str]] = field(default_factory=lambda: {"coop": ["a photo of a {}."]})
    epoch: int = 0
    max_epochs: int = 1
    step: int = 0
    _zero_shot: dict = field(default_factory=dict, repr=False)

    def templates_of(self, kind: str) -> list[str]:
        """Templates of a kind, falling back to the dataset's own ("coop") template."""
        return self.templates.get(kind) or self.templates["coop"]

    def zero_shot_text_features(self, kind: str = "coop") -> torch.Tensor:
        """Normalised (K, D) features of the frozen model's hand-crafted prompts, computed once per run."""
        templates = tuple(self.templates_of(kind))
        if templates not in self._zero_shot:
            learner = self.learner
            self._zero_shot[templates] = zero_shot_text_features(learner.backbone, learner.classnames, list(templates))
        return self._zero_shot[templates]


class Regularizer:
    """Base class: every hook is a no-op, so subclasses implement only what they use."""

    name: ClassVar[str] = ""
    #: learner names this regularizer composes with; None means every learner
    applies_to: ClassVar[tuple[str, ...] | None] = None
    #: if True the trainer computes one gradient per named loss and calls ``transform_gradients``
    wants_loss_gradients: ClassVar[bool] = False

    def check(self, learner: PromptLearner) -> None:
        """Refuse a learner this regularizer cannot serve, saying why."""
        if self.applies_to is not None and learner.name not in self.applies_to:
            raise ConfigError(
                f"regularizer {self.name!r} does not apply to learner {learner.name!r}; "
                f"it composes with: {', '.join(self.applies_to)}"
            )

    def setup(self, ctx: TrainContext) -> None:
        """Prepare before training (register parametrizations, fetch shared needs)."""

    def before_step(self, ctx: TrainContext, batch: dict) -> None:
        """Called before each training step's forward pass (e.g. to refit a quantizer's codebook)."""

    def extra_loss(self, ctx: TrainContext, outputs: LearnerOutput, batch: dict) -> dict[str, torch.Tensor]:
        return {}

    def transform_gradients(
        self, ctx: TrainContext, per_loss_grads: dict[str, dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Combine per-loss gradients {loss: {tensor: grad}} into one gradient per tensor."""
        raise NotImplementedError

    def on_epoch_end(self, ctx: TrainContext) -> dict:
        """Called after each epoch; returns metrics to log."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
