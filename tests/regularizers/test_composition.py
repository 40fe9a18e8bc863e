"""The composition matrix, derived from capabilities (DESIGN.md principle 1): every pair whose learner
offers what the regularizer requires trains, and the regularizer's own term shows in the history and
changes the trained prompt; every other pair is refused naming each missing capability."""

from __future__ import annotations

import pytest
import torch

from vlprompt.engine.trainer import TrainConfig, Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.registry import LEARNERS, build_learner
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.registry import REGULARIZERS, build_regularizer

# options each regularizer needs where the paper gives no default (documented reconstructions)
OPTIONS = {
    "prograd": {},
    "kgcoop": {},
    "nemesis": {"beta": 1, "omega": 1.0},  # PUN: a term with a gradient on any data (PAN: test_nemesis.py)
    "npt": {"lambda_lmc": 0.1, "lambda_mmi": 0.1},
    "promptsrc": {},
    "qprompt": {"bits": 1, "kmeans_init": "kmeans++", "kmeans_iters": 5, "cac_interval": 1, "cac_kl_threshold": 0.0},
}
LEARNER_OPTIONS = {"maple": {"prompt_depth": 3},  # the tiny towers have 4 layers
                   "ivlp": {"prompt_depth_text": 3, "prompt_depth_vision": 3}}
BUILTIN_LEARNERS = ("zeroshot", "coop", "cocoop", "maple", "ivlp")
PAIRS = [(l, r) for l in BUILTIN_LEARNERS for r in sorted(OPTIONS)]


def test_every_registered_regularizer_is_in_the_matrix():
    assert set(OPTIONS) <= set(REGULARIZERS) and set(BUILTIN_LEARNERS) <= set(LEARNERS)


def _train(learner_name, regs, backbone, classnames, batches):
    """The history and the trained learner's logits on the first batch (what the prompt predicts)."""
    torch.manual_seed(0)
    learner = build_learner(learner_name, backbone, classnames, "a photo of a {}.",
                            **LEARNER_OPTIONS.get(learner_name, {}))
    trainer = Trainer(learner, TrainConfig(epochs=2, batch_size=4, lr=0.01), regs,
                      TrainContext(learner=learner, dataset="tiny"))
    history = trainer.fit(batches)
    probe = next(iter(batches.epoch(0)))
    with torch.no_grad():
        logits = learner.eval()(images=probe.get("images"), features=probe.get("features")).logits
    return history, logits


@pytest.mark.parametrize("learner_name,reg_name", PAIRS)
def test_pair_trains_with_its_own_term_or_is_refused_naming_the_missing_capability(
        tiny_backbone, classnames, training_batches, learner_name, reg_name):
    lcls, rcls = LEARNERS.get(learner_name), REGULARIZERS.get(reg_name)
    missing = rcls.requires - lcls.capabilities
    reg = build_regularizer({"name": reg_name, **OPTIONS[reg_name]})
    if missing:
        torch.manual_seed(0)
        learner = build_learner(learner_name, tiny_backbone, classnames, "a photo of a {}.",
                                **LEARNER_OPTIONS.get(learner_name, {}))
        with pytest.raises(ConfigError) as err:
            Trainer(learner, TrainConfig(epochs=1), [reg], TrainContext(learner=learner))
        for capability in missing:
            assert capability.value in str(err.value)
        for capability in rcls.requires & lcls.capabilities:
            assert capability.value not in str(err.value)  # only what is missing is named
        return
    probe = build_learner(learner_name, tiny_backbone, classnames, "a photo of a {}.",
                          **LEARNER_OPTIONS.get(learner_name, {}))
    batches = training_batches(probe, tiny_backbone, classnames)
    alone_history, alone_logits = _train(learner_name, [], tiny_backbone, classnames, batches)
    history, logits = _train(learner_name, [reg], tiny_backbone, classnames, batches)
    own = sorted({key for record in history for key in record if reg_name in key})
    assert own, f"{reg_name} left no term in the history: {sorted(history[-1])}"
    assert all(reg_name not in key for record in alone_history for key in record)
    assert all(torch.isfinite(torch.tensor(record[key])) for record in history for key in own)
    assert (logits - alone_logits).abs().max() > 1e-4, f"{reg_name} did not change what the prompt predicts"
