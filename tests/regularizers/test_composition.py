"""Every (learner x regularizer) pair that applies trains for a few steps; every other pair is refused
at construction with a message that says why (DESIGN.md principle 1)."""

from __future__ import annotations

import pytest
import torch

from vlprompt.engine.batches import FeatureBatches, ImageBatches
from vlprompt.engine.trainer import TrainConfig, Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.registry import LEARNERS, build_learner
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.registry import REGULARIZERS, build_regularizer

# options each regularizer needs where the paper gives no default (documented reconstructions)
OPTIONS = {
    "prograd": {},
    "kgcoop": {},
    "nemesis": {"beta": 0, "omega": 1.0},
    "npt": {"lambda_lmc": 0.1, "lambda_mmi": 0.1},
    "promptsrc": {},
    "qprompt": {"bits": 1, "kmeans_init": "kmeans++", "kmeans_iters": 5, "cac_interval": 1, "cac_kl_threshold": 0.0},
}
APPLIES = {
    "zeroshot": set(),
    "coop": {"prograd", "kgcoop", "nemesis", "npt", "qprompt", "promptsrc"},
    "cocoop": {"prograd", "kgcoop", "nemesis", "npt", "qprompt", "promptsrc"},
    "maple": {"prograd", "kgcoop", "npt", "qprompt", "promptsrc"},
    "ivlp": {"prograd", "kgcoop", "npt", "qprompt", "promptsrc"},
}
PAIRS = [(l, r) for l in sorted(LEARNERS) for r in sorted(REGULARIZERS)]


def test_the_matrix_covers_every_registered_learner_and_regularizer():
    assert set(APPLIES) == set(LEARNERS)
    assert set(OPTIONS) == set(REGULARIZERS)


@pytest.mark.parametrize("learner_name,reg_name", PAIRS)
def test_pair_trains_or_is_refused(tiny_backbone, classnames, image_folder_factory, tmp_path, learner_name, reg_name):
    torch.manual_seed(0)
    options = {"maple": {"prompt_depth": 3},  # the tiny towers have 4 layers
               "ivlp": {"prompt_depth_text": 3, "prompt_depth_vision": 3}}.get(learner_name, {})
    learner = build_learner(learner_name, tiny_backbone, classnames, "a photo of a {}.", **options)
    reg = build_regularizer({"name": reg_name, **OPTIONS[reg_name]})
    context = TrainContext(learner=learner, dataset="tiny")
    config = TrainConfig(epochs=2, batch_size=4, lr=0.01)
    if reg_name not in APPLIES[learner_name]:
        with pytest.raises(ConfigError) as err:
            Trainer(learner, config, [reg], context)
        message = str(err.value)
        assert learner_name in message or "nothing to train" in message
        return
    if learner.uses_image_tower:
        from vlprompt.data.records import DatasetSplits, ImageRecord

        root = image_folder_factory(tmp_path / "imgs", classnames, per_class=1, splits=("train",))
        records = [ImageRecord(str(f), k, d.name) for k, d in enumerate(sorted((root / "train").iterdir()))
                   for f in sorted(d.iterdir())]
        batches = ImageBatches(tiny_backbone, DatasetSplits("tiny", classnames, records, [], []), records, 4, 0)
    else:
        feats = torch.randn(1, 8, tiny_backbone.embed_dim)
        batches = FeatureBatches(feats, torch.arange(8) % len(classnames), 4, seed=0)
    trainer = Trainer(learner, config, [reg], context)
    before = {n: p.detach().clone() for n, p in trainer.params.items()}
    history = trainer.fit(batches)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss_ce"])) for h in history)
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.params.items())
