"""A new learner and a new regularizer are new code plus a registration: defined here, in the test, they
train through the normal run path (config parsing, run_experiment, artifact) with no edit of vlprompt."""

from __future__ import annotations

import json
from dataclasses import dataclass

import method_matrix
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.engine.config import resolve_config
from vlprompt.engine.run import run_experiment
from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import from_pretrained
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import LEARNERS, register_learner
from vlprompt.learners.zeroshot import zero_shot_text_features
from vlprompt.options import Options, option
from vlprompt.regularizers.base import Regularizer
from vlprompt.regularizers.registry import REGULARIZERS, register_regularizer


@dataclass
class ShiftConfig(Options):
    owner = "toy_shift"
    scale: float = option(1.0, "how much of the learned shift is added")


class ToyShift(PromptLearner):
    """Zero-shot features plus one learned shift vector shared by all classes."""

    name = "toy_shift"
    Config = ShiftConfig
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.FIXED_IMAGE_FEATURES,
                              Capability.CLASS_CLASSIFIER, Capability.NEW_CLASSES})

    def __init__(self, backbone, classnames, config=None, **options):
        super().__init__(backbone, classnames, config, **options)
        self.shift = nn.Parameter(torch.zeros(backbone.embed_dim))
        self.set_classnames(classnames)

    def set_classnames(self, classnames):
        self.classnames = list(classnames)
        self.register_buffer("base", zero_shot_text_features(self.backbone, self.classnames, ["a photo of a {}."]),
                             persistent=False)

    def text_features(self, image_features=None):
        return F.normalize(self.base + self.config.scale * self.shift, dim=-1)


@dataclass
class PullConfig(Options):
    owner = "toy_pull"
    weight: float = option(1.0, "weight of the squared norm of every learned tensor")


class ToyPull(Regularizer):
    """Squared norm of the learned tensors: needs nothing beyond learned prompts."""

    name = "toy_pull"
    Config = PullConfig
    requires = frozenset({Capability.LEARNED_PROMPTS})

    def extra_loss(self, ctx, outputs, batch):
        return {"toy_pull": self.config.weight * sum(t.square().sum() for t in ctx.learner.learnable_tensors().values())}


@pytest.fixture
def registered():
    register_learner(ToyShift)
    register_regularizer(ToyPull)
    yield
    LEARNERS.unregister("toy_shift")
    REGULARIZERS.unregister("toy_pull")


def test_toy_learner_and_regularizer_train_through_the_run_path(registered, tmp_path, image_folder_factory):
    images = image_folder_factory(tmp_path / "images", per_class=4)
    overrides = [f"data.dataset=folder:{images}", "data.shots=2", "backbone.pretrained=null", "train.epochs=2",
                 "train.batch_size=4", "learner.name=toy_shift", "learner.options.scale=0.5",
                 "regularizers=[{name: toy_pull, weight: 0.1}]", f"output_dir={tmp_path / 'runs'}",
                 f"cache_dir={tmp_path / 'cache'}"]
    run = run_experiment(resolve_config(None, overrides))
    history = [json.loads(line) for line in open(run.run_dir / "metrics.jsonl")]
    assert len(history) == 2 and all(r["loss_toy_pull"] > 0 for r in history)
    learner = from_pretrained(run.run_dir / "prompt")
    assert isinstance(learner, ToyShift) and learner.config.scale == 0.5
    assert float(learner.shift.detach().abs().sum()) > 0
    assert run.metrics["all"]["num_samples"] == 5 * 4


def test_a_toy_regularizer_is_refused_by_capability(registered):
    with pytest.raises(ConfigError, match="'toy_pull' cannot be used with learner 'zeroshot': it needs learned_prompts"):
        resolve_config(None, ["learner.name=zeroshot", "regularizers=[{name: toy_pull}]"])


def test_a_toy_method_enters_every_shared_matrix_with_no_list_edited(registered, tiny_backbone, classnames,
                                                                    training_batches):
    assert "toy_shift" in method_matrix.trained_learners()
    toy_pairs = [pair for pair in method_matrix.all_pairs() if "toy_shift" in pair or "toy_pull" in pair]
    assert ("toy_shift", "toy_pull") in toy_pairs and ("coop", "toy_pull") in toy_pairs
    assert ("toy_shift", "kgcoop") in method_matrix.composing_pairs(method_matrix.DEVICE_OPTIONS)
    assert ("toy_shift", "nemesis") not in method_matrix.composing_pairs(method_matrix.DEVICE_OPTIONS)
    for lname, rname in toy_pairs:
        if lname == "toy_shift" or rname == "toy_pull" and lname in ("zeroshot", "coop"):
            method_matrix.check_composition(lname, rname, tiny_backbone, classnames, training_batches)
    method_matrix.check_device("toy_shift", "toy_pull", tiny_backbone, classnames, training_batches)
    method_matrix.check_precision("toy_shift", "bf16", "fp32")


def test_option_tables_name_only_registered_methods(monkeypatch):
    assert method_matrix.stale_option_entries() == []
    monkeypatch.setitem(method_matrix.LEARNER_OPTIONS, "renamed_learner", {})
    monkeypatch.setitem(method_matrix.DEVICE_OPTIONS, "renamed_regularizer", {})
    assert method_matrix.stale_option_entries() == ["learner 'renamed_learner'",
                                                    "regularizer (device) 'renamed_regularizer'"]
