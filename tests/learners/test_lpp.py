"""LP++: its data-driven step sizes, its starting point and one step, computed here from the paper's
equations; the epoch kept; a reload."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.lpp import LPP


def data(tiny_backbone, n_per_class=3, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    centres = torch.randn(classes, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(9))
    return centres[labels] + torch.randn(len(labels), tiny_backbone.embed_dim, generator=g), labels


def test_step_sizes_start_and_first_step_by_hand(tiny_backbone, classnames):
    feats, labels = data(tiny_backbone)
    val, val_labels = data(tiny_backbone, 2, seed=1)
    learner = LPP(tiny_backbone, classnames, epochs=1, alpha_every=1000)
    learner.build_from_training_set(feats[None], labels)
    torch.manual_seed(5)
    chosen = learner.select_on_validation(val, val_labels)
    f = F.normalize(feats, dim=-1)
    t = learner.text_features()
    n = len(f)
    assert chosen["lr_w"] == pytest.approx(4 * n / torch.linalg.eigvalsh((f.t() @ f).double()).max().item(), rel=1e-6)
    scores = f @ t.t()
    assert chosen["lr_alpha"] == pytest.approx(n / (4 * scores.pow(2).sum(0).max().item()), rel=1e-5)
    own = torch.stack([scores[labels == k, k].mean() for k in range(5)])
    alpha0 = 250 * own.mean()
    assert torch.allclose(learner.alpha, alpha0.expand(5), atol=1e-4)  # alpha took no step in one epoch
    torch.manual_seed(5)
    b0 = nn.Linear(tiny_backbone.embed_dim, 5).bias.detach()  # the fresh layer's bias after the same seed
    w0 = F.one_hot(labels, 5).float().t() @ f  # class sums
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    F.cross_entropy(f @ w.t() + b + alpha0 * scores, labels).backward()
    assert torch.allclose(learner.weight, w0 - chosen["lr_w"] * w.grad, atol=1e-4)
    assert torch.allclose(learner.bias, b0 - chosen["lr_w"] * b.grad, atol=1e-5)
    assert chosen["epoch"] == 1


def test_the_kept_epoch_is_the_last_of_the_best_and_a_reload_scores_alike(tiny_backbone, classnames, tmp_path):
    feats, labels = data(tiny_backbone)
    val, val_labels = data(tiny_backbone, 2, seed=1)
    learner = LPP(tiny_backbone, classnames, epochs=30)
    learner.build_from_training_set(feats[None], labels)
    chosen = learner.select_on_validation(val, val_labels)
    # separable clusters: perfect on validation from early on, and the last of equal epochs is kept (>=)
    assert chosen["epoch"] == 30 and chosen["validation_accuracy"] == 100.0
    with torch.no_grad():
        logits = learner(features=val).logits
        assert (logits.argmax(-1) == val_labels).all()
        loaded = from_pretrained(save_pretrained(learner, tmp_path / "lpp"))
        assert torch.allclose(loaded(features=val).logits, logits, atol=1e-5)
        assert torch.allclose(loaded.for_classes(classnames[::-1])(features=val).logits, logits.flip(-1), atol=1e-5)
    with pytest.raises(ConfigError, match="lpp.epochs=0"):
        LPP(tiny_backbone, classnames, epochs=0)
    with pytest.raises(ConfigError, match="before training"):
        LPP(tiny_backbone, classnames).select_on_validation(val, val_labels)
