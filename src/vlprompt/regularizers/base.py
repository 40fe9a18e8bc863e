"""The regularizer hook protocol (DESIGN.md, "Regularizer hooks").

A regularizer overrides only the hooks it needs; the trainer calls every hook of every regularizer.
Needs that several regularizers share (zero-shot text features of the frozen model, say) are
computed once by the ``TrainContext``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from vlprompt.learners.base import LearnerOutput, NoOptions, PromptLearner, make_options
from vlprompt.learners.capabilities import Capability, require
from vlprompt.learners.zeroshot import zero_shot_text_features
from vlprompt.options import Options


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
    #: the cached frozen training features (views, N, D) and labels (N,), set when training starts;
    #: None for learners that prompt the image tower
    train_features: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
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
    """Base class: every hook is a no-op, so subclasses implement only what they use.

    A regularizer declares the learner capabilities it ``requires`` (``requirements`` may refine
    them from its options); it composes with exactly the learners that offer them all.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[Options]] = NoOptions
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.LEARNED_PROMPTS})
    #: if True the trainer computes one gradient per named loss and calls ``transform_gradients``
    wants_loss_gradients: ClassVar[bool] = False

    def __init__(self, config: Options | None = None, **options):
        self.config = make_options(self.Config, config, options)

    @classmethod
    def requirements(cls, config: Options) -> frozenset[Capability]:
        """The capabilities a learner needs to compose with this regularizer under ``config``."""
        return cls.requires

    def check(self, learner: PromptLearner) -> None:
        """Refuse a learner this regularizer cannot serve, naming the missing capability."""
        require(f"regularizer {self.name!r}", self.requirements(self.config), learner.name, learner.offers)

    def setup(self, ctx: TrainContext) -> None:
        """Prepare before training (register parametrizations, fetch shared needs)."""

    def on_fit_start(self, ctx: TrainContext) -> None:
        """Called when training (or a resumed training) starts, with the training data in the context."""

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
