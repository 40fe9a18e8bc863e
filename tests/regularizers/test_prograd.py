"""ProGrad: the gradient rule on constructed pairs, the distillation loss by hand, the initialisation,
and the trainer's per-loss gradient path on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.coop import CoOp
from vlprompt.learners.prompts import template_context_init
from vlprompt.learners.zeroshot import ZeroShotCLIP, zero_shot_text_features
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.prograd import (
    KL_LOSS,
    ProGrad,
    distillation_loss,
    project_gradient,
)


def test_conflicting_gradients_are_projected_by_hand():
    g_ce = torch.tensor([1.0, -2.0, 0.5])
    g_kl = torch.tensor([-1.0, 1.0, 0.0])  # <g_ce, g_kl> = -3: conflict
    # unit = (-1, 1, 0)/sqrt(2), <g_ce, unit> = -3/sqrt(2), so g_ce - lam * (-3/2) * (-1, 1, 0)
    full = project_gradient(g_ce, g_kl, lam=1.0)
    assert torch.allclose(full, torch.tensor([-0.5, -0.5, 0.5]))
    assert abs(float(full @ g_kl)) < 1e-7  # lambda = 1: orthogonal to the teacher's gradient
    assert torch.allclose(project_gradient(g_ce, g_kl, lam=0.5), torch.tensor([0.25, -1.25, 0.5]))
    assert torch.equal(project_gradient(g_ce, g_kl, lam=0.0), g_ce)


def test_projection_keeps_the_tensor_shape():
    g_ce = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g_kl = torch.tensor([[-1.0, 0.0], [0.0, 0.0]])
    out = project_gradient(g_ce, g_kl, lam=1.0)
    assert out.shape == (2, 2) and torch.equal(out, torch.tensor([[0.0, 0.0], [0.0, 1.0]]))


def test_agreeing_or_zero_gradients_are_left_alone_without_nan():
    g_ce = torch.tensor([1.0, 2.0])
    assert torch.equal(project_gradient(g_ce, torch.tensor([1.0, -0.4]), 1.0), g_ce)  # cosine > 0
    assert torch.equal(project_gradient(g_ce, torch.tensor([2.0, -1.0]), 1.0), g_ce)  # orthogonal: cosine 0
    zero_teacher = project_gradient(g_ce, torch.zeros(2), 1.0)
    assert torch.isfinite(zero_teacher).all() and torch.equal(zero_teacher, g_ce)
    zero_ce = project_gradient(torch.zeros(2), torch.tensor([1.0, 0.0]), 1.0)
    assert torch.isfinite(zero_ce).all() and torch.equal(zero_ce, torch.zeros(2))


def test_distillation_loss_matches_the_direct_formula_and_the_kl_gradient():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    for t in (1.0, 2.0):
        per_row = []
        for s_row, t_row in zip(student.tolist(), teacher.tolist()):
            p = [math.exp(v / t) / sum(math.exp(u / t) for u in t_row) for v in t_row]
            log_q = [v / t - math.log(sum(math.exp(u / t) for u in s_row)) for v in s_row]
            per_row.append(-sum(pk * lk for pk, lk in zip(p, log_q)))
        expected = t * t * sum(per_row) / len(per_row)
        assert abs(float(distillation_loss(student, teacher, t)) - expected) < 1e-5
    # the gradient equals that of the KL divergence (they differ by the teacher's entropy only)
    s = student.clone().requires_grad_()
    kl = F.kl_div(torch.log_softmax(s / 2, -1), torch.softmax(teacher / 2, -1), reduction="batchmean") * 4
    (g1,) = torch.autograd.grad(distillation_loss(s, teacher, 2.0), s)
    (g2,) = torch.autograd.grad(kl, s)
    assert torch.allclose(g1, g2, atol=1e-6)


def test_other_losses_keep_their_gradients_and_the_kl_is_not_descended():
    per_loss = {
        "ce": {"a": torch.tensor([1.0, -2.0, 0.5]), "b": torch.tensor([1.0])},
        KL_LOSS: {"a": torch.tensor([-1.0, 1.0, 0.0]), "b": torch.tensor([5.0])},
        "kgcoop": {"a": torch.tensor([0.1, 0.2, 0.3]), "b": torch.tensor([-2.0])},
    }
    out = ProGrad(lambda_=1.0).transform_gradients(None, per_loss)
    assert torch.allclose(out["a"], torch.tensor([-0.4, -0.3, 0.8]))  # projected CE + kgcoop's gradient
    assert torch.allclose(out["b"], torch.tensor([-1.0]))  # no conflict: CE + kgcoop's, no KL


def test_options_are_validated_and_zero_shot_is_refused(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="lambda_"):
        ProGrad(lambda_=1.5)
    with pytest.raises(ConfigError, match="temperature"):
        ProGrad(temperature=0.0)
    with pytest.raises(ConfigError, match="learner 'zeroshot': it needs learned_text_prompts"):
        ProGrad().check(ZeroShotCLIP(tiny_backbone, classnames))


def test_the_teacher_uses_the_prograd_templates(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    context = TrainContext(learner=learner, templates={"coop": ["a photo of a {}."], "prograd": ["itap of a {}."]})
    with torch.no_grad():
        out = learner(features=torch.randn(3, tiny_backbone.embed_dim))
    teacher_text = zero_shot_text_features(tiny_backbone, classnames, ["itap of a {}."])
    teacher = tiny_backbone.logit_scale * out.image_features @ teacher_text.t()
    loss = ProGrad(temperature=2.0).extra_loss(context, out, {})[KL_LOSS]
    assert torch.allclose(loss, distillation_loss(out.logits, teacher, 2.0), atol=1e-6)


def test_prograd_init_zeros_then_template_prefix(tiny_backbone):
    ctx, placeholder = template_context_init(tiny_backbone, "a photo of a {}.", n_ctx=6)
    assert placeholder == "X X a photo of a"
    assert torch.equal(ctx[:2], torch.zeros(2, tiny_backbone.text.width))
    assert torch.equal(ctx[2:], tiny_backbone.text.embed(tiny_backbone.tokenize(["a photo of a"]))[0, 1:5])
    # punctuation: 8 words but 9 BPE tokens; the first 8 tokens ("a type of pet , a photo of") are learned
    ctx, placeholder = template_context_init(tiny_backbone, "a type of pet, a photo of a {}.")
    assert ctx.shape == (16, tiny_backbone.text.width) and not ctx[:8].any()
    assert placeholder == "X X X X X X X X a type of pet, a photo of a"
    tokens = tiny_backbone.text.embed(tiny_backbone.tokenize(["a type of pet, a photo of a"]))[0]
    assert torch.equal(ctx[8:], tokens[1:9]) and not torch.equal(ctx[15], tokens[9])


def test_prograd_init_errors_name_the_fix(tiny_backbone):
    with pytest.raises(ConfigError, match="n_ctx=3.*n_ctx >= 4"):
        template_context_init(tiny_backbone, "a photo of a {}.", n_ctx=3)
    with pytest.raises(ConfigError, match="class name must come last"):
        template_context_init(tiny_backbone, "{} texture.")


def test_trainer_steps_with_the_projected_per_loss_gradients(tiny_backbone, classnames):
    """CoOp starts at the teacher's own prompt, with labels the teacher ranks last: the first step has
    no teacher gradient, later ones pull back against CE. Plain SGD (no momentum, no decay) makes every
    update -lr times what ProGrad returned."""
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a")
    context = TrainContext(learner=learner, templates={"coop": ["a photo of a {}."]})
    feats = torch.randn(1, 16, tiny_backbone.embed_dim)
    teacher = context.zero_shot_text_features("prograd")
    labels = (F.normalize(feats[0], dim=-1) @ teacher.t()).argmin(-1)
    reg = ProGrad(lambda_=1.0)
    seen = []
    transform = reg.transform_gradients

    def recording(ctx, per_loss_grads):
        combined = transform(ctx, per_loss_grads)
        seen.append((learner.ctx.detach().clone(), per_loss_grads, combined))
        return combined

    reg.transform_gradients = recording
    lr = 0.5
    config = TrainConfig(epochs=1, lr=lr, batch_size=4, momentum=0.0, weight_decay=0.0, warmup_epochs=0)
    trainer = Trainer(learner, config, [reg], context)
    batches = FeatureBatches(feats, labels, 4, seed=0)
    first = next(batches.epoch(0))
    out = learner(features=first["features"])
    (g_ce,) = torch.autograd.grad(F.cross_entropy(out.logits, first["labels"]), learner.ctx)
    trainer.fit(batches)

    assert len(seen) == 4 and all(set(per) == {"ce", KL_LOSS} for _, per, _ in seen)
    assert torch.allclose(seen[0][1]["ce"]["ctx"], g_ce, atol=1e-6)
    for (before, _, combined), after in zip(seen, [s[0] for s in seen[1:]] + [learner.ctx.detach()]):
        assert torch.allclose(after, before - lr * combined["ctx"], atol=1e-6)
    conflicts = 0
    for _, per, combined in seen:
        ce, kl, applied = per["ce"]["ctx"].flatten(), per[KL_LOSS]["ctx"].flatten(), combined["ctx"].flatten()
        if float(ce @ kl) < 0:
            conflicts += 1
            assert abs(float(applied @ kl)) < 1e-4 * float(applied.norm() * kl.norm())
            assert not torch.allclose(applied, ce)
        else:
            assert torch.equal(applied, ce)
    assert conflicts >= 1
