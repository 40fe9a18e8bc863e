"""The learning rate of every epoch equals the reference schedule (Dassl's constant warm-up + cosine)."""

from __future__ import annotations

import math

import pytest
import torch

from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.schedule import lr_at_epoch
from vlprompt.engine.trainer import Trainer
from vlprompt.learners.coop import CoOp


def reference_lrs(base_lr: float, max_epochs: int, warmup_lr: float = 1e-5) -> list[float]:
    """Replay Dassl: ConstantWarmupScheduler(1 epoch) over CosineAnnealingLR(T_max=max_epochs), stepped per epoch.

    The successor only starts stepping once warm-up is over, so its first post-warm-up value is the base LR.
    """
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base_lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    lrs = [warmup_lr]
    for epoch in range(1, max_epochs):
        if epoch > 1:
            opt.step()
            cosine.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_logged_values_from_the_reference_issue():
    # CoOp#26 log, 1-indexed epochs 1, 2, 3 with T = 50 and lr 0.002
    assert lr_at_epoch(0, 0.002, 50) == 1e-5
    assert lr_at_epoch(1, 0.002, 50) == pytest.approx(2.0e-3, abs=1e-12)
    assert lr_at_epoch(2, 0.002, 50) == pytest.approx(1.998027e-3, abs=1e-9)


@pytest.mark.parametrize("max_epochs", [5, 50, 200])
def test_every_epoch_matches_torch_cosine_annealing(max_epochs):
    expected = reference_lrs(0.002, max_epochs)
    ours = [lr_at_epoch(e, 0.002, max_epochs) for e in range(max_epochs)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert ours[-1] == pytest.approx(0.002 * (1 + math.cos(math.pi * (max_epochs - 2) / max_epochs)) / 2)


def test_trainer_uses_the_schedule_each_epoch(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    feats = torch.randn(1, 20, tiny_backbone.embed_dim)
    labels = torch.arange(20) % len(classnames)
    trainer = Trainer(learner, TrainConfig(epochs=6, lr=0.01, batch_size=8))
    history = trainer.fit(FeatureBatches(feats, labels, 8, seed=1))
    assert [h["lr"] for h in history] == pytest.approx(reference_lrs(0.01, 6), rel=1e-9)
