"""ProGrad's projection and distillation loss, KgCoOp's knowledge gap, against hand-computed values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.trainer import TrainConfig, Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.coop import CoOp
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.kgcoop import KgCoOp, knowledge_gap
from vlprompt.regularizers.prograd import ProGrad, distillation_loss, project_gradient, prograd_context_init


def test_projection_of_conflicting_gradients_is_orthogonal_to_the_general_direction():
    g_ce = torch.tensor([1.0, -2.0, 0.5])
    g_kl = torch.tensor([-1.0, 1.0, 0.0])  # cosine with g_ce is negative
    out = project_gradient(g_ce, g_kl, lam=1.0)
    # by hand: unit = (-1, 1, 0)/sqrt(2); <g_ce, unit> = -3/sqrt(2); out = g_ce + 3/2 (-1, 1, 0)
    assert torch.allclose(out, torch.tensor([-0.5, -0.5, 0.5]))
    assert abs(float(out @ g_kl)) < 1e-6
    half = project_gradient(g_ce, g_kl, lam=0.5)
    assert torch.allclose(half, torch.tensor([0.25, -1.25, 0.5]))


def test_agreeing_gradients_and_zero_general_direction_are_left_alone():
    g_ce = torch.tensor([1.0, 2.0])
    assert torch.equal(project_gradient(g_ce, torch.tensor([1.0, 0.0]), 1.0), g_ce)
    out = project_gradient(g_ce, torch.zeros(2), 1.0)
    assert torch.equal(out, g_ce) and torch.isfinite(out).all()


def test_distillation_loss_by_hand():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    t = 2.0
    p = torch.softmax(teacher / t, -1)
    expected = -(p * torch.log_softmax(student / t, -1)).sum() * t * t
    assert torch.allclose(distillation_loss(student, teacher, t), expected)
    # its gradient equals that of the KL divergence (they differ by the teacher's entropy)
    s = student.clone().requires_grad_()
    kl = F.kl_div(torch.log_softmax(s / t, -1), p, reduction="batchmean") * t * t
    (g1,) = torch.autograd.grad(distillation_loss(s, teacher, t), s)
    (g2,) = torch.autograd.grad(kl, s)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_prograd_init_zeros_then_template_words(tiny_backbone):
    ctx, placeholder = prograd_context_init(tiny_backbone, "a photo of a {}.", n_ctx=6)
    assert placeholder == "X X a photo of a"
    assert torch.equal(ctx[:2], torch.zeros(2, tiny_backbone.text.width))
    words = tiny_backbone.text.embed(tiny_backbone.tokenize(["a photo of a"]))[0, 1:5]
    assert torch.equal(ctx[2:], words)
    with pytest.raises(ConfigError, match="n_ctx"):
        prograd_context_init(tiny_backbone, "a photo of a {}.", n_ctx=3)


def test_trainer_uses_the_projected_gradient(tiny_backbone, classnames):
    """One SGD step (no momentum history, no decay) moves ctx by -lr * projected CE gradient."""
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    feats = torch.randn(1, 8, tiny_backbone.embed_dim)
    labels = torch.arange(8) % len(classnames)
    context = TrainContext(learner=learner)
    reg = ProGrad(lambda_=1.0)
    trainer = Trainer(learner, TrainConfig(epochs=1, lr=0.1, batch_size=8, warmup_epochs=0, weight_decay=0.0),
                      [reg], context)
    batch = next(FeatureBatches(feats, labels, 8, seed=0).epoch(0))
    out = learner(features=batch["features"])
    (g_ce,) = torch.autograd.grad(F.cross_entropy(out.logits, labels[batch["index"]]), learner.ctx, retain_graph=True)
    (g_kl,) = torch.autograd.grad(reg.extra_loss(context, out, batch)["prograd_kl"], learner.ctx)
    expected = learner.ctx.detach() - 0.1 * project_gradient(g_ce, g_kl, 1.0)
    trainer.fit(FeatureBatches(feats, labels, 8, seed=0))
    assert torch.allclose(learner.ctx.detach(), expected, atol=1e-6)


def test_kgcoop_is_zero_on_the_hand_crafted_prompt_and_matches_by_hand(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a")
    context = TrainContext(learner=learner, templates={"coop": ["a photo of a {}."]})
    out = learner(features=torch.randn(2, tiny_backbone.embed_dim))
    loss = KgCoOp(weight=8.0).extra_loss(context, out, {})["kgcoop"].detach()
    assert abs(float(loss)) < 1e-5
    a = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    b = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=-1)
    assert torch.allclose(knowledge_gap(a, b), torch.tensor(1 - (2**-0.5 + 1) / 2))
