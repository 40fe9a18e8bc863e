"""DeKg's HSIC term against values computed by hand, and its place beside KgCoOp's term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput
from vlprompt.learners.coop import CoOp
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.dekg import DeKg, hsic


def test_hsic_by_hand():
    identity = torch.eye(2)
    # T' = C' = I / sqrt(2): K = I / 2, and H = I - 1/2 is idempotent, so tr(H K H K) = tr(H) / 4 = 1/4
    assert torch.allclose(hsic(identity, identity), torch.tensor(0.25))
    # a constant kernel (both classes the same feature) carries no dependence: H K_C = 0
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(hsic(identity, same), torch.tensor(0.0), atol=1e-7)
    t, c = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.allclose(hsic(t, c), hsic(c, t), atol=1e-6)  # symmetric (trace is cyclic)
    assert torch.allclose(hsic(3.0 * t, c), hsic(t, c), atol=1e-6)  # scale-free (Frobenius normalisation)


def test_dekg_term_on_the_learned_and_kgcoop_text_features(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a")
    context = TrainContext(learner=learner, templates={"coop": ["a photo of a {}."],
                                                       "kgcoop": ["a photo of a {}, a type of shape."]})
    reg = DeKg(weight=2.0)
    text = learner.text_features()
    outputs = LearnerOutput(logits=torch.zeros(1, 5), image_features=torch.zeros(1, 8), text_features=text)
    frozen = F.normalize(tiny_backbone.encode_text(
        [f"a photo of a {c.replace('_', ' ')}, a type of shape." for c in classnames]), dim=-1)
    value = reg.extra_loss(context, outputs, {})["dekg"]
    assert torch.allclose(value, 2.0 * hsic(text, frozen), atol=1e-6)
    value.backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    # per-image text features: the term of each image, averaged
    per_image = torch.stack([text.detach(), frozen])
    outputs = LearnerOutput(logits=torch.zeros(2, 5), image_features=torch.zeros(2, 8), text_features=per_image)
    expected = 2.0 * (hsic(text.detach(), frozen) + hsic(frozen, frozen)) / 2
    assert torch.allclose(reg.extra_loss(context, outputs, {})["dekg"], expected, atol=1e-6)
    with pytest.raises(ConfigError, match="dekg.weight=-1"):
        DeKg(weight=-1)
