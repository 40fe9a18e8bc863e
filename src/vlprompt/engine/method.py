"""A method, ``learner[+regularizer...]``: built and trained the same way by a run and by a user.

``engine.run`` builds a run's method with ``build_method`` and trains it with ``train_method``;
``vlprompt.create_method`` and ``vlprompt.fit`` call the same two functions, so a method trained from
Python is the method a run trains (same composition checks, same batches, same trainer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlprompt.backbones import Backbone
from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.data.templates import KINDS as TEMPLATE_KINDS
from vlprompt.data.templates import templates_for
from vlprompt.engine.batches import FeatureBatches, ImageBatches
from vlprompt.engine.config import LearnerConfig, RegularizerConfig, TrainConfig
from vlprompt.engine.memory import choose_text_chunk
from vlprompt.engine.trainer import Trainer
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import LEARNERS
from vlprompt.regularizers.base import Regularizer, TrainContext
from vlprompt.regularizers.composition import check_composition
from vlprompt.regularizers.registry import REGULARIZERS

log = logging.getLogger(__name__)


@dataclass
class Method:
    """A learner with its regularizers, as ``build_method`` (and ``vlprompt.create_method``) returns it."""

    learner: PromptLearner
    regularizers: list[Regularizer]


@dataclass
class FitResult:
    """What training gave: a record per epoch (losses, ``train_accuracy``, learning rate), which epoch's
    tensors the learner holds, and seconds per stage."""

    history: list[dict] = field(default_factory=list)
    model_selection: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)


def build_method(backbone: Backbone, classnames: list[str], learner: LearnerConfig,
                 regularizers: Sequence[RegularizerConfig] = (), dataset_template: str | None = None) -> Method:
    """The learner for ``classnames`` and its regularizers; a combination that cannot work is refused naming
    the missing capability. Options that refer to the dataset's template are resolved with ``dataset_template``."""
    learner_cls = LEARNERS.get(learner.name)
    check_composition(learner.name, learner_cls.capabilities_of(learner.options),
                      [(REGULARIZERS.get(r.name), r.options) for r in regularizers])
    built = learner_cls(backbone, classnames, learner.options.with_dataset_template(dataset_template))
    return Method(built, [REGULARIZERS.get(r.name)(r.options) for r in regularizers])


def size_text_chunk(learner: PromptLearner, train: TrainConfig) -> None:
    """Set how many class prompts the learner encodes per checkpointed chunk, from ``train.text_chunk`` and
    ``train.text_memory_gb`` (a learner that encodes no class prompts of its own is left as it is)."""
    shape = learner.class_prompt_shape()
    if shape is None:
        return
    learner.text_chunk = choose_text_chunk(train.text_chunk, learner.backbone, *shape, train.text_memory_gb)
    if learner.text_chunk:
        log.info("class prompts that share no prefix are encoded in checkpointed chunks of %d classes",
                 learner.text_chunk)


#: the frozen image tower's features of records: ``features(records, views=, seed=, desc=)`` -> (views, N, ...)
FeatureSource = Callable[..., torch.Tensor]


def train_method(method: Method, data: DatasetSplits, train: TrainConfig, features: FeatureSource, *,
                 dataset: str, workers: int = 0, checkpoint: Path | None = None, metrics_path: Path | None = None,
                 stop_after_epoch: int | None = None, validate: Callable[[], float] | None = None) -> FitResult:
    """Build the learner's cache model (if it has one) and train it on ``data.train`` (resuming from
    ``checkpoint`` when it exists).

    ``features`` gives frozen image features (a learner that prompts or tunes the image tower reads images
    instead); ``dataset`` picks the hand-crafted templates some regularizers read; ``validate`` gives the
    validation accuracy after each epoch when ``train.model_selection`` is best_val.
    """
    learner = method.learner
    result = FitResult()
    builds_cache = Capability.CACHE_MODEL in learner.offers
    if not learner.learnable_tensors() and not builds_cache:
        return result
    start = time.perf_counter()
    if learner.uses_image_tower:
        batches = ImageBatches(learner.backbone, data, data.train, train.batch_size, train.seed, workers)
    else:
        feats = features(data.train, views=train.views, seed=train.seed, desc="train features")
        labels = torch.tensor([r.label for r in data.train])
        batches = FeatureBatches(feats, labels, train.batch_size, train.seed)
        if builds_cache:
            learner.build_from_training_set(feats, labels)
    result.timings["train features"] = round(time.perf_counter() - start, 3)
    if not learner.learnable_tensors():
        return result
    context = TrainContext(learner=learner, dataset=dataset,
                           templates={kind: templates_for(dataset, kind, data.template) for kind in TEMPLATE_KINDS})
    trainer = Trainer(learner, train, method.regularizers, context)
    start = time.perf_counter()
    result.history = trainer.fit(batches, checkpoint=checkpoint, metrics_path=metrics_path,
                                 stop_after_epoch=stop_after_epoch, validate=validate)
    result.model_selection = trainer.selection
    result.timings["train"] = round(time.perf_counter() - start, 3)
    return result


def records_features(cache, learner: PromptLearner, part: DatasetSplits, workers: int = 0) -> FeatureSource:
    """A ``FeatureSource`` reading ``part``'s frozen features from ``cache`` (a ``FeatureCache``) in the form the
    learner reads them: pooled, or with the regions' tokens."""

    def features(records: list[ImageRecord], **kwargs) -> torch.Tensor:
        return cache.features(learner.backbone, part, records, workers=workers, tokens=learner.uses_image_tokens,
                              **kwargs)

    return features
