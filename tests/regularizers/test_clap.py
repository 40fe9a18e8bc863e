"""ZS-LP and CLAP's class-adaptive constraint, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.zslp import ZSLP
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.clap import CLAP, multipliers, zero_shot_class_confidence


def test_zero_shot_confidence_and_multipliers_by_hand():
    # softmax([0, ln 3]) = [1/4, 3/4]; the true classes get 3/4, 3/4 and 1/2
    logits = torch.tensor([[0.0, math.log(3)], [math.log(3), 0.0], [0.0, 0.0]])
    confidence = zero_shot_class_confidence(logits, torch.tensor([1, 0, 0]), 2)
    assert torch.allclose(confidence, torch.tensor([(0.75 + 0.5) / 2, 0.75]))
    assert torch.allclose(multipliers(confidence, "class_adaptive"), torch.tensor([0.625, 0.75]))
    assert torch.allclose(multipliers(confidence, "corrected"), torch.tensor([0.625, 0.75]) * 2 / 1.375)
    assert torch.allclose(multipliers(confidence, "constant"), torch.tensor([0.6875, 0.6875]))
    assert torch.equal(multipliers(confidence, "balanced"), torch.ones(2))
    # a class without training samples gets 0, not a division by zero
    assert zero_shot_class_confidence(logits, torch.tensor([0, 0, 0]), 2)[1] == 0


def test_zslp_starts_from_the_mean_of_unnormalised_template_features(tiny_backbone, classnames):
    templates = ["a photo of a {}.", "a drawing of a {}."]
    learner = ZSLP(tiny_backbone, classnames, templates=templates)
    per_template = [tiny_backbone.encode_text([t.format(c.replace("_", " ")) for c in classnames]) for t in templates]
    assert torch.allclose(learner.prototypes.detach(), (per_template[0] + per_template[1]) / 2, atol=1e-5)
    assert torch.equal(learner.prototypes.detach(), learner.zero_shot_prototypes)
    assert list(learner.learnable_tensors()) == ["prototypes"]
    f = torch.randn(3, tiny_backbone.embed_dim)
    expected = tiny_backbone.logit_scale * F.normalize(f, dim=-1) @ F.normalize(learner.prototypes.detach(), dim=-1).T
    with torch.no_grad():
        assert torch.allclose(learner(features=f).logits, expected, atol=1e-5)


def test_zslp_serves_its_classes_in_any_order_and_refuses_others(tiny_backbone, classnames):
    learner = ZSLP(tiny_backbone, classnames)
    f = torch.randn(3, tiny_backbone.embed_dim)
    with torch.no_grad():
        logits = learner(features=f).logits
        reordered = learner.for_classes(classnames[::-1])(features=f).logits
    assert torch.allclose(reordered, logits.flip(-1), atol=1e-6)
    with torch.no_grad():  # a view of a view orders by the trained classes, not by the view's
        back = learner.for_classes(classnames[::-1]).for_classes(classnames)(features=f).logits
    assert torch.allclose(back, logits, atol=1e-6)
    with pytest.raises(ConfigError, match="'grey cube'"):
        learner.for_classes(classnames[:-1] + ["grey cube"])
    with pytest.raises(ConfigError, match="only the 5 classes"):
        learner.for_classes(classnames[:2])


def test_clap_penalty_on_the_prototypes_by_hand(tiny_backbone, classnames):
    learner = ZSLP(tiny_backbone, classnames)
    width = tiny_backbone.embed_dim
    # two cached views of six training images
    features = torch.randn(2, 6, width, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    trainer = Trainer(learner, TrainConfig(epochs=1, batch_size=3, lr=0.1), [CLAP()],
                      TrainContext(learner=learner))
    trainer.start(FeatureBatches(features, labels, 3, seed=0))
    clap = trainer.regularizers[0]
    w0 = learner.zero_shot_prototypes
    with torch.no_grad():
        logits = tiny_backbone.logit_scale * F.normalize(features.reshape(12, width), dim=-1) @ F.normalize(w0, dim=-1).T
    probs = logits.softmax(-1)
    expected_alpha = torch.stack([probs[torch.cat([labels, labels]) == k, k].mean() for k in range(5)])
    assert torch.allclose(clap.alpha, expected_alpha, atol=1e-6)

    shift = torch.zeros_like(w0)
    shift[1, :3] = torch.tensor([1.0, 2.0, 2.0])  # |shift_1|^2 = 9
    with torch.no_grad():
        learner.prototypes.copy_(w0 + shift)
    term = clap.extra_loss(trainer.context, None, {})["clap"]
    assert torch.allclose(term, expected_alpha[1] * 9 / 5)
    cosine = CLAP(distance="cosine", weight=2.0)
    cosine.alpha = expected_alpha
    gap = 1 - F.cosine_similarity(w0 + shift, w0, dim=-1)
    assert torch.allclose(cosine.extra_loss(trainer.context, None, {})["clap"], 2.0 * (expected_alpha * gap).mean())


def test_clap_is_refused_without_class_prototypes(tiny_backbone, classnames):
    from vlprompt.learners.coop import CoOp

    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    with pytest.raises(ConfigError, match="class_prototypes"):
        Trainer(learner, TrainConfig(epochs=1), [CLAP()], TrainContext(learner=learner))
    with pytest.raises(ConfigError, match="clap.weight=-1"):
        CLAP(weight=-1)
