"""Nemesis: PUN/PAN values by hand, PAN's strict marking, the schedule, validation, resume, training."""

from __future__ import annotations

import io
import math
import random

import pytest
import torch
import torch.nn.functional as F

from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput
from vlprompt.learners.coop import CoOp
from vlprompt.learners.maple import MaPLe
from vlprompt.learners.zeroshot import ZeroShotCLIP
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.nemesis import Nemesis, loss_schedule


def set_rows(learner, rows):
    """Put hand-made vectors (padded with zeros to the width) into the context."""
    with torch.no_grad():
        learner.ctx.zero_()
        flat = learner.ctx.view(-1, learner.ctx.shape[-1])
        for i, row in enumerate(rows):
            flat[i, : len(row)] = torch.tensor(row, dtype=torch.float32)


def no_outputs(n=1, d=128):
    return LearnerOutput(logits=torch.zeros(n, 5), image_features=torch.zeros(n, d), text_features=torch.zeros(5, d))


@pytest.mark.parametrize("norm,expected_mean", [("L2", (5 + 1 + 0) / 3), ("L1", (7 + 1 + 0) / 3),
                                                ("Linf", (4 + 1 + 0) / 3)])
def test_pun_value_unified_context(tiny_backbone, classnames, norm, expected_mean):
    learner = CoOp(tiny_backbone, classnames, n_ctx=3)
    set_rows(learner, [[3.0, 4.0], [0.0, -1.0], []])  # norms L2 5, 1, 0; L1 7, 1, 0; Linf 4, 1, 0
    reg = Nemesis(beta=1, omega=2.0, norm=norm)
    ctx = TrainContext(learner=learner, epoch=5, max_epochs=10)  # lambda = 1 - sigmoid(0) = 0.5
    reg.setup(ctx)
    losses = reg.extra_loss(ctx, no_outputs(), {"labels": torch.zeros(1, dtype=torch.long)})
    assert set(losses) == {"nemesis_pun"}
    assert losses["nemesis_pun"].item() == pytest.approx(0.5 * 2.0 * expected_mean, rel=1e-6)
    assert losses["nemesis_pun"].dtype == torch.float32 and losses["nemesis_pun"].requires_grad


def test_pun_value_class_specific_context_sums_over_classes(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, n_ctx=2, csc=True)  # ctx (5, 2, W)
    set_rows(learner, [[3.0, 4.0], [1.0], [6.0, 8.0], [], [2.0]])  # class 0: 5, 1; class 1: 10, 0; class 2: 2, 0
    reg = Nemesis(beta=1, omega=1.0, food_pets_override=True)  # constant lambda = 1
    ctx = TrainContext(learner=learner, epoch=0, max_epochs=10)
    reg.setup(ctx)
    loss = reg.extra_loss(ctx, no_outputs(), {"labels": torch.zeros(1, dtype=torch.long)})["nemesis_pun"]
    assert loss.item() == pytest.approx((5 + 1 + 10 + 0 + 2 + 0) / 2, rel=1e-6)  # divided by M = 2, not K * M


def pan_case(backbone, classnames, tau=0.001):
    """A one-position learner and images that the rescaled prompt gets right and the original wrong, or v.v."""
    torch.manual_seed(0)
    learner = CoOp(backbone, classnames, n_ctx=1)
    with torch.no_grad():
        learner.ctx.mul_(50)
        original = F.normalize(learner.encode_context(learner.ctx), dim=-1)
        rescaled = F.normalize(learner.encode_context(learner.ctx * tau), dim=-1)
    k = len(classnames)
    # image = a class's rescaled-prompt feature: the rescaled prompt predicts that class, the original may not
    gains = [c for c in range(k) if (rescaled @ rescaled[c]).argmax() == c and (original @ rescaled[c]).argmax() != c]
    losses = [c for c in range(k) if (original @ original[c]).argmax() == c and (rescaled @ original[c]).argmax() != c]
    assert gains and losses, "the construction needs a class of each kind"
    return learner, rescaled[gains[0]], gains[0], original[losses[0]], losses[0]


def test_pan_marks_a_position_only_when_rescaling_strictly_improves(tiny_backbone, classnames):
    learner, gain_image, gain_label, loss_image, loss_label = pan_case(tiny_backbone, classnames)
    reg = Nemesis(beta=0, omega=3.0, n_positions=1)
    ctx = TrainContext(learner=learner, epoch=0, max_epochs=4)
    reg.setup(ctx)
    # one image: original 0 correct, rescaled 1 correct -> marked with omega
    weights = reg.pan_weights(learner, gain_image[None], torch.tensor([gain_label]))
    assert weights.tolist() == [3.0]
    # two images: original 1 correct (the second), rescaled 1 correct (the first) -> a tie, not marked
    both = torch.stack([gain_image, loss_image])
    weights = reg.pan_weights(learner, both, torch.tensor([gain_label, loss_label]))
    assert weights.tolist() == [0.0]


def test_pan_loss_value_and_food_pets_scale(tiny_backbone, classnames):
    learner, gain_image, gain_label, _, _ = pan_case(tiny_backbone, classnames)
    norm = learner.ctx.detach().norm().item()
    outputs = LearnerOutput(logits=torch.zeros(1, 5), image_features=gain_image[None], text_features=torch.zeros(5, 128))
    batch = {"features": gain_image[None], "labels": torch.tensor([gain_label])}  # PAN re-scores the batch's features
    for override, scale, lam in ((False, 3.0, loss_schedule(1, 4)), (True, 50.0, 1.0)):
        reg = Nemesis(beta=0, omega=3.0, food_pets_override=override)
        ctx = TrainContext(learner=learner, epoch=1, max_epochs=4)
        reg.setup(ctx)
        losses = reg.extra_loss(ctx, outputs, batch)
        assert set(losses) == {"nemesis_pan"}
        assert losses["nemesis_pan"].item() == pytest.approx(lam * scale * norm / 1, rel=1e-5)


def test_random_k_marks_k_positions_without_a_test(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    reg = Nemesis(beta=0, omega=2.0, n_positions="random2")
    reg.setup(TrainContext(learner=learner))
    weights = reg.pan_weights(learner, torch.randn(3, 128), torch.zeros(3, dtype=torch.long))
    assert sorted(weights.tolist()) == [0.0, 0.0, 2.0, 2.0]


def test_schedule_values():
    assert loss_schedule(5, 10) == pytest.approx(0.5)
    assert loss_schedule(0, 10) == pytest.approx(1 - 1 / (1 + math.exp(1.0)))  # 0.7311
    assert loss_schedule(0, 10) == pytest.approx(0.731059, abs=1e-6)
    assert loss_schedule(10, 10) == pytest.approx(0.268941, abs=1e-6)
    assert loss_schedule(49, 50) == pytest.approx(1 - 1 / (1 + math.exp(-0.2 * 24)), rel=1e-12)


def test_validation_names_the_option():
    with pytest.raises(ConfigError, match="beta is required"):
        Nemesis(omega=1.0)
    with pytest.raises(ConfigError, match="allow_mixed_beta"):
        Nemesis(beta=0.5, omega=1.0)
    assert Nemesis(beta=0.5, omega=1.0, allow_mixed_beta=True).beta == 0.5
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        Nemesis(beta=1.5, omega=1.0, allow_mixed_beta=True)
    with pytest.raises(ConfigError, match="omega"):
        Nemesis(beta=1)
    for tau in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="0 < tau < 1"):
            Nemesis(beta=0, omega=1.0, tau=tau)
    with pytest.raises(ConfigError, match="'L1', 'L2', 'Linf'"):
        Nemesis(beta=1, omega=1.0, norm="L3")
    with pytest.raises(ConfigError, match="randomK"):
        Nemesis(beta=0, omega=1.0, n_positions="all")


def test_refuses_learners_without_ctx_or_with_a_prompted_image_tower(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="'zeroshot'.*context_vectors.*learned_text_prompts"):
        Nemesis(beta=1, omega=1.0).check(ZeroShotCLIP(tiny_backbone, classnames))
    with pytest.raises(ConfigError, match="'maple': it needs fixed_image_features") as err:
        Nemesis(beta=0, omega=1.0).check(MaPLe(tiny_backbone, classnames, prompt_depth=2))
    assert "context_vectors" not in str(err.value)  # MaPLe has a ctx: only the missing capability is named


def test_position_sampling_resumes_from_state_dict(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, n_ctx=8)
    random.seed(3)
    reg = Nemesis(beta=0, omega=1.0, n_positions="random1")
    reg.setup(TrainContext(learner=learner))
    def draw(r):
        return [int(r.pan_weights(learner, torch.randn(1, 128), torch.zeros(1, dtype=torch.long)).argmax())
                for _ in range(6)]
    draw(reg)
    buf = io.BytesIO()
    torch.save(reg.state_dict(), buf)
    expected = draw(reg)
    other = Nemesis(beta=0, omega=1.0, n_positions="random1")
    other.setup(TrainContext(learner=learner))
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert draw(other) == expected


def test_coop_with_pan_trains_and_logs_norms_and_weights(tiny_backbone, classnames):
    torch.manual_seed(0)
    random.seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=3)
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(1, 16, 128, generator=g), torch.arange(16) % 5
    reg = Nemesis(beta=0, omega=1.0, n_positions=2, tau=0.5)
    history = Trainer(learner, TrainConfig(epochs=2, lr=0.01, batch_size=8, warmup_epochs=0), [reg]).fit(
        FeatureBatches(feats, labels, 8, seed=0))
    last = history[-1]
    for j in range(3):
        assert last[f"nemesis_norm_{j}"] == pytest.approx(learner.ctx[j].norm().item(), rel=1e-5)
        assert last[f"nemesis_pan_weight_{j}"] in (0.0, 0.5, 1.0)  # mean of two steps' weights in {0, 1}
    assert "loss_nemesis_pan" in last and math.isfinite(last["loss_nemesis_pan"])
