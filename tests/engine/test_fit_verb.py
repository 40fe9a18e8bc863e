"""``vlprompt.fit`` trains what ``vlprompt.create_method`` returns, through the engine's own training path,
on the embedded world with the shipped tiny CLIP."""

from __future__ import annotations

import pytest
import torch

import vlprompt
from vlprompt.data.sampling import few_shot
from vlprompt.engine.datasets import resolve_dataset
from vlprompt.errors import ConfigError


@pytest.fixture(scope="module")
def world_backbone():
    return vlprompt.load_backbone("vlprompt-tiny", "world")


def test_fit_trains_the_created_method_and_records_accuracy(world_backbone, tmp_path):
    data = few_shot(resolve_dataset("world:objects"), shots=2, seed=1)
    method = vlprompt.create_method("coop+kgcoop", world_backbone, data.classnames, learner={"n_ctx": 4},
                                    regularizers={"kgcoop": {"weight": 8.0}})
    before = {name: t.detach().clone() for name, t in method.learner.learnable_tensors().items()}
    fitted = vlprompt.fit(method, data, train={"epochs": 2, "batch_size": 8, "lr": 0.01}, cache_dir=tmp_path)
    assert [record["epoch"] for record in fitted.history] == [1, 2]
    for record in fitted.history:
        assert 0.0 <= record["train_accuracy"] <= 100.0
        assert record["loss_ce"] > 0 and "loss_kgcoop" in record  # the regularizer took part
    assert fitted.model_selection == {"rule": "last", "epoch": 2}
    after = method.learner.learnable_tensors()
    assert set(after) == set(before)
    assert all(not torch.equal(before[name], after[name].detach()) for name in before)
    assert list((tmp_path / "features").iterdir())  # frozen features cached where it was told


def test_fit_draws_shots_from_a_dataset_spec(world_backbone, tmp_path):
    """A spec is resolved and ``shots`` images per class drawn with train.seed: one per class here, so the
    epoch's accuracy is a whole number of correct answers out of K images."""
    full = resolve_dataset("world:objects")
    method = vlprompt.create_method("coop", world_backbone, full.classnames, learner={"n_ctx": 4})
    fitted = vlprompt.fit(method, "world:objects", train={"epochs": 1, "batch_size": 8, "seed": 3}, shots=1,
                          cache_dir=tmp_path)
    assert len(fitted.history) == 1 and "train_accuracy" in fitted.history[0]
    seen = fitted.history[0]["train_accuracy"] * len(full.classnames) / 100  # correct answers among K images
    assert abs(seen - round(seen)) < 1e-6
    assert fitted.timings["train"] > 0


def test_fit_refuses_data_of_other_classes_and_bad_train_options(world_backbone, tmp_path):
    data = few_shot(resolve_dataset("world:objects"), shots=1, seed=1)
    method = vlprompt.create_method("coop", world_backbone, data.classnames[:3], learner={"n_ctx": 4})
    with pytest.raises(ConfigError, match=r"built for 3 classes .*create_method\(\.\.\., data\.classnames\)"):
        vlprompt.fit(method, data, cache_dir=tmp_path)
    method = vlprompt.create_method("coop", world_backbone, data.classnames, learner={"n_ctx": 4})
    with pytest.raises(ConfigError, match=r"train\.optimizer='lbfgs' is not valid; choose one of: 'sgd'"):
        vlprompt.fit(method, data, train={"optimizer": "lbfgs"}, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="train has no option epoch; valid options of train: epochs"):
        vlprompt.fit(method, data, train={"epoch": 3}, cache_dir=tmp_path)


def test_a_run_and_create_method_build_the_same_method(tmp_path):
    """prepare (run_experiment's first stage) and create_method go through one builder: with the same seed
    and options they give the same learner tensors, regularizers and text-chunk budget."""
    from vlprompt.engine.config import resolve_config
    from vlprompt.engine.method import size_text_chunk
    from vlprompt.engine.run import prepare
    from vlprompt.engine.seeding import seed_everything

    config = resolve_config("world-demo", ["regularizers=[{name: kgcoop, weight: 2.0}]", "train.seed=5",
                                           "learner.options.ctx_init=null",  # drawn from the seeded generator
                                           "train.text_chunk=3", f"cache_dir={tmp_path}", f"output_dir={tmp_path}"])
    run = prepare(config)
    seed_everything(5)  # as prepare does, before it loads the backbone
    backbone = vlprompt.load_backbone(config.backbone.name, config.backbone.pretrained)
    method = vlprompt.create_method("coop+kgcoop", backbone, run.learner.classnames, learner={"n_ctx": 4},
                                    regularizers={"kgcoop": {"weight": 2.0}})
    size_text_chunk(method.learner, config.train)
    assert run.learner.config == method.learner.config
    ours, theirs = run.learner.learnable_tensors(), method.learner.learnable_tensors()
    assert set(ours) == set(theirs) and all(torch.equal(ours[n], theirs[n]) for n in ours)
    seed_everything(6)
    other = vlprompt.create_method("coop", backbone, run.learner.classnames, learner={"n_ctx": 4}).learner
    assert not torch.equal(other.learnable_tensors()["ctx"], ours["ctx"])  # the comparison can fail
    assert [(r.name, r.config) for r in run.regularizers] == [(r.name, r.config) for r in method.regularizers]
    assert run.learner.text_chunk == method.learner.text_chunk == 3
    assert run.learner.class_prompt_shape() == method.learner.class_prompt_shape() is not None


def test_a_learner_without_class_prompts_declares_none():
    backbone = vlprompt.load_backbone("vlprompt-tiny", "world")
    probe = vlprompt.create_method("linear_probe", backbone, ["a", "b"]).learner
    assert probe.class_prompt_shape() is None
