"""Training, checkpoint/resume, and the optimizer semantics of the reference (SGD, momentum, decay)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.engine.batches import FeatureBatches, batch_indices
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.coop import CoOp
from vlprompt.learners.zeroshot import ZeroShotCLIP


def make_data(backbone, n=24, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, n, backbone.embed_dim, generator=g), torch.arange(n) % k


def test_drop_last_only_when_a_full_batch_exists():
    g = torch.Generator().manual_seed(0)
    assert [len(b) for b in batch_indices(10, 4, g)] == [4, 4]
    assert [len(b) for b in batch_indices(3, 4, g)] == [3]


def test_training_reduces_the_loss(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    feats, labels = make_data(tiny_backbone)
    history = Trainer(learner, TrainConfig(epochs=8, lr=0.5, batch_size=8, warmup_epochs=0)).fit(
        FeatureBatches(feats, labels, 8, seed=3))
    assert history[-1]["loss_ce"] < history[0]["loss_ce"]


def one_step(backbone, classnames, config: TrainConfig):
    """(context before, the CE gradient there, context after) of one training step on one batch."""
    torch.manual_seed(0)
    learner = CoOp(backbone, classnames, n_ctx=2)
    feats, labels = make_data(backbone, n=8)
    batches = FeatureBatches(feats[:1], labels, 8, seed=0)
    batch = next(batches.epoch(0))
    start = learner.ctx.detach().clone()
    loss = F.cross_entropy(learner(features=batch["features"]).logits, batch["labels"])
    (grad,) = torch.autograd.grad(loss, [learner.ctx])
    Trainer(learner, config).fit(batches)
    return start, grad, learner.ctx.detach()


def test_one_step_is_sgd_with_momentum_and_weight_decay(tiny_backbone, classnames):
    """First step of SGD(momentum 0.9, wd 5e-4) from zero momentum: ctx <- ctx - lr * (grad + wd * ctx)."""
    start, grad, after = one_step(tiny_backbone, classnames, TrainConfig(epochs=1, lr=0.1, batch_size=8,
                                                                         warmup_epochs=0))
    assert torch.allclose(after, start - 0.1 * (grad + 5e-4 * start), atol=1e-6)


def test_one_step_is_adamw_with_decoupled_weight_decay(tiny_backbone, classnames):
    """First AdamW step: m_hat = g, v_hat = g^2, so ctx <- ctx (1 - lr wd) - lr g / (|g| + eps)."""
    config = TrainConfig(epochs=1, lr=0.01, batch_size=8, warmup_epochs=0, optimizer="adamw", adam_eps=1e-4,
                         weight_decay=0.01)
    start, grad, after = one_step(tiny_backbone, classnames, config)
    assert torch.allclose(after, start * (1 - 0.01 * 0.01) - 0.01 * grad / (grad.abs() + 1e-4), atol=1e-6)


def test_one_step_is_adam_with_weight_decay_in_the_gradient(tiny_backbone, classnames):
    """First Adam step (Dassl's, as TCP trains): g' = g + wd ctx, ctx <- ctx - lr g' / (|g'| + eps)."""
    config = TrainConfig(epochs=1, lr=0.01, batch_size=8, warmup_epochs=0, optimizer="adam", adam_eps=1e-3,
                         weight_decay=0.5)
    start, grad, after = one_step(tiny_backbone, classnames, config)
    coupled = grad + 0.5 * start
    assert torch.allclose(after, start - 0.01 * coupled / (coupled.abs() + 1e-3), atol=1e-6)


def test_nothing_to_train_and_bad_options_are_refused(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="nothing to train"):
        Trainer(ZeroShotCLIP(tiny_backbone, classnames), TrainConfig())
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="train.optimizer='lion' is not valid; choose one of: 'sgd', 'adamw', 'adam'"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ConfigError, match="train.adam_eps=0"):
        TrainConfig(adam_eps=0)


def test_bf16_autocast_moves_the_prompt_like_fp32(tiny_backbone, classnames):
    """bf16 keeps ~3 significant digits: the update differs, but its direction and size agree with fp32."""
    feats, labels = make_data(tiny_backbone)
    updates = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        learner = CoOp(tiny_backbone, classnames, n_ctx=2)
        start = learner.ctx.detach().clone()
        Trainer(learner, TrainConfig(epochs=3, lr=0.05, batch_size=8, precision=precision)).fit(
            FeatureBatches(feats, labels, 8, seed=1))
        updates[precision] = (learner.ctx.detach() - start).flatten()
    a, b = updates["fp32"], updates["bf16"]
    assert not torch.equal(a, b)
    assert F.cosine_similarity(a, b, dim=0) > 0.95
    assert 0.8 < float(b.norm() / a.norm()) < 1.25


class _Planted:
    """A global that weights_only loading refuses; torch's own message then advises weights_only=False."""


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    else:  # a pickle of an arbitrary object: loadable only with weights_only=False
        torch.save({"epochs_done": 1, "learner": _Planted()}, path)


@pytest.mark.parametrize("how", ["truncated", "garbage", "foreign_pickle"])
def test_damaged_checkpoint_is_refused_with_one_message_naming_it(tmp_path, tiny_backbone, classnames, how):
    from vlprompt.errors import ArtifactError

    feats, labels = make_data(tiny_backbone)
    config = TrainConfig(epochs=3, batch_size=8)
    ckpt = tmp_path / "checkpoint.pt"
    Trainer(CoOp(tiny_backbone, classnames, n_ctx=2), config).fit(FeatureBatches(feats, labels, 8, seed=1),
                                                                checkpoint=ckpt, stop_after_epoch=1)
    _damage(ckpt, how)
    with pytest.raises(ArtifactError) as err:
        Trainer(CoOp(tiny_backbone, classnames, n_ctx=2), config).fit(FeatureBatches(feats, labels, 8, seed=1),
                                                                    checkpoint=ckpt)
    message = str(err.value)
    assert str(ckpt) in message and "delete it to restart the run" in message
    assert "weights_only" not in message and "\n" not in message


def test_non_finite_loss_is_a_user_facing_error(tiny_backbone, classnames):
    from vlprompt.errors import TrainingError

    feats, labels = make_data(tiny_backbone)
    trainer = Trainer(CoOp(tiny_backbone, classnames, n_ctx=2), TrainConfig(epochs=2, lr=1e30, warmup_epochs=0))
    with pytest.raises(TrainingError, match="non-finite loss in epoch .*lower train.lr"):
        trainer.fit(FeatureBatches(feats * 1e30, labels, 8, seed=1))


def test_best_val_keeps_the_tensors_of_the_first_best_epoch(tiny_backbone, classnames):
    """The learner ends with the tensors it had after the epoch whose validation accuracy was the best
    (the first of equals), as an identical run stopped after that epoch has them."""
    feats, labels = make_data(tiny_backbone)
    scripted = iter([40.0, 70.0, 55.0, 70.0])  # the validation accuracy after each epoch: epoch 2 is kept
    config = TrainConfig(epochs=4, lr=0.5, batch_size=8, warmup_epochs=0, model_selection="best_val")

    def trained(stop=None, validate=None, cfg=config):
        torch.manual_seed(0)
        learner = CoOp(tiny_backbone, classnames, n_ctx=2)
        trainer = Trainer(learner, cfg)
        history = trainer.fit(FeatureBatches(feats, labels, 8, seed=3), stop_after_epoch=stop, validate=validate)
        return learner, trainer, history

    learner, trainer, history = trained(validate=lambda: next(scripted))
    after_two, _, _ = trained(stop=2, validate=lambda: 0.0)
    assert trainer.selection == {"rule": "best_val", "epoch": 2, "val_accuracy": 70.0}
    assert [r["val_accuracy"] for r in history] == [40.0, 70.0, 55.0, 70.0]
    assert torch.equal(learner.ctx, after_two.ctx)
    last, last_trainer, _ = trained(cfg=TrainConfig(epochs=4, lr=0.5, batch_size=8, warmup_epochs=0))
    assert last_trainer.selection == {"rule": "last", "epoch": 4} and not torch.equal(last.ctx, learner.ctx)
    with pytest.raises(ConfigError, match="model_selection=best_val needs the validation split"):
        trained()
    with pytest.raises(ConfigError, match="train.model_selection='best' is not valid"):
        TrainConfig(model_selection="best")
