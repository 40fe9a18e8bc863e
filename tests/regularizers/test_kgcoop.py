"""KgCoOp: zero on the hand-crafted prompt itself, hand-computed values otherwise, per-image features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.base import LearnerOutput
from vlprompt.learners.coop import CoOp
from vlprompt.learners.zeroshot import zero_shot_text_features
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.kgcoop import KgCoOp, knowledge_gap


def test_zero_when_the_learned_prompt_is_the_kgcoop_template(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a")
    # the "coop" kind differs, so a zero also shows that the "kgcoop" templates are the ones used
    context = TrainContext(learner=learner, templates={"coop": ["itap of a {}."], "kgcoop": ["a photo of a {}."]})
    out = learner(features=torch.randn(2, tiny_backbone.embed_dim))
    loss = KgCoOp().extra_loss(context, out, {})["kgcoop"]
    assert abs(loss.item()) < 1e-5


def test_value_against_another_template_and_its_gradient(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a")
    context = TrainContext(learner=learner, templates={"kgcoop": ["itap of a {}."]})
    out = learner(features=torch.randn(2, tiny_backbone.embed_dim))
    loss = KgCoOp(weight=3.0).extra_loss(context, out, {})["kgcoop"]
    hand = zero_shot_text_features(tiny_backbone, classnames, ["itap of a {}."])
    cosines = F.cosine_similarity(out.text_features.detach(), hand, dim=-1).tolist()
    expected = 3.0 * (1 - sum(cosines) / len(cosines))
    assert expected > 1e-3 and abs(loss.item() - expected) < 1e-5
    (grad,) = torch.autograd.grad(loss, learner.ctx)
    assert grad.abs().sum() > 0


def test_knowledge_gap_by_hand_for_shared_and_per_image_features():
    s = 1 / math.sqrt(2)
    learned = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    hand = torch.tensor([[s, s], [0.0, 1.0]])
    assert abs(float(knowledge_gap(learned, hand)) - (1 - (s + 1) / 2)) < 1e-6
    per_image = torch.stack([learned, torch.tensor([[0.0, 1.0], [1.0, 0.0]])])  # (B=2, K=2, D=2)
    # cosines: image 0 -> s, 1; image 1 -> s, 0; mean over images and classes = (2s + 1) / 4
    assert abs(float(knowledge_gap(per_image, hand)) - (1 - (2 * s + 1) / 4)) < 1e-6


def test_extra_loss_weights_the_gap_and_averages_per_image_features(tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    context = TrainContext(learner=learner)
    hand = context.zero_shot_text_features("kgcoop")
    per_image = torch.stack([hand, -hand, hand])  # cosines 1, -1, 1 -> mean 1/3
    out = LearnerOutput(logits=torch.zeros(3, len(classnames)), image_features=torch.zeros(3, hand.shape[1]),
                        text_features=per_image)
    assert abs(float(KgCoOp(weight=8.0).extra_loss(context, out, {})["kgcoop"]) - 8.0 * (2 / 3)) < 1e-5


def test_negative_weight_is_refused():
    with pytest.raises(ConfigError, match="kgcoop.weight=-1"):
        KgCoOp(weight=-1)
