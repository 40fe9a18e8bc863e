"""Tip-Adapter's cache model and its validation search, against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.tip_adapter import TipAdapter, TipAdapterF, search_grid


def test_the_search_grid_is_the_official_one():
    # [i * (7 - 0.1) / 200 + 0.1 for i in range(200)]: starts at 0.1, stops short of 7
    grid = search_grid(7.0, 200)
    assert len(grid) == 200 and grid[0] == pytest.approx(0.1) and grid[1] == pytest.approx(0.1345)
    assert grid[-1] == pytest.approx(0.1 + 199 * 6.9 / 200)


def test_cache_keys_values_and_logits_by_hand(tiny_backbone, classnames):
    learner = TipAdapter(tiny_backbone, classnames[:3], alpha=2.0, beta=3.0, templates="a photo of a {}.")
    width = tiny_backbone.embed_dim
    views = torch.randn(2, 4, width, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 2])
    learner.build_from_training_set(views, labels)
    keys = F.normalize((views[0] + views[1]) / 2, dim=-1)
    assert torch.allclose(learner.cache_keys, keys, atol=1e-6)
    assert torch.equal(learner.cache_values, F.one_hot(labels, 3).float())
    f = torch.randn(5, width, generator=torch.Generator().manual_seed(1))
    image = F.normalize(f, dim=-1)
    text = F.normalize(tiny_backbone.encode_text([f"a photo of a {c.replace('_', ' ')}." for c in classnames[:3]]),
                       dim=-1)
    cache = torch.exp(-3.0 * (1 - image @ keys.T)) @ F.one_hot(labels, 3).float()
    expected = tiny_backbone.logit_scale * image @ text.T + 2.0 * cache
    with torch.no_grad():
        assert torch.allclose(learner(features=f).logits, expected, atol=1e-4)
        # another class list keeps the entries of the shared classes: the new class has CLIP's term only
        other = learner.for_classes([classnames[2], classnames[4]])
        text2 = F.normalize(tiny_backbone.encode_text([f"a photo of a {c.replace('_', ' ')}."
                                                       for c in (classnames[2], classnames[4])]), dim=-1)
        only = 2.0 * torch.exp(-3.0 * (1 - image @ keys[2:].T)).sum(-1)
        expected2 = tiny_backbone.logit_scale * image @ text2.T + torch.stack([only, torch.zeros(5)], dim=-1)
        assert torch.allclose(other(features=f).logits, expected2, atol=1e-4)
        assert torch.allclose(learner(features=f).logits, expected, atol=1e-4)  # the learner is untouched


def test_the_validation_search_takes_the_first_best_pair_in_grid_order(tiny_backbone, classnames):
    names = classnames[:2]
    learner = TipAdapter(tiny_backbone, names, templates="a photo of a {}.", search_scale=[10.0, 100.0],
                         search_step=[2, 2])
    text = learner.text_features()
    # a validation image that zero-shot CLIP puts in class 0 by a small margin although its label is 1;
    # the cache holds a key for class 1 at the image (affinity 1) and one for class 0 opposite (affinity
    # -1), so the cache adds alpha to class 1 and alpha * exp(-2 beta) to class 0
    f = F.normalize(text[0] + 0.8 * text[1], dim=-1)
    gap = float(tiny_backbone.logit_scale * (f @ text[0] - f @ text[1]))
    flips = lambda beta, alpha: alpha * (1 - math.exp(-2 * beta)) > gap  # noqa: E731
    # grid: beta in [0.1, 5.05], alpha in [0.1, 50.05]; beta is the outer loop
    assert not flips(0.1, 0.1) and flips(0.1, 50.05), gap
    learner.build_from_training_set(torch.stack([-f, f])[None], torch.tensor([0, 1]))
    chosen = learner.select_on_validation(f[None], torch.tensor([1]))
    assert chosen["beta"] == pytest.approx(0.1) and chosen["alpha"] == pytest.approx(50.05)
    assert chosen["validation_accuracy"] == 100.0
    assert float(learner.beta) == pytest.approx(0.1) and float(learner.alpha) == pytest.approx(50.05)
    assert TipAdapter(tiny_backbone, names, search_scale=[]).select_on_validation(f[None], torch.tensor([1])) == {}


@pytest.mark.parametrize("cls", [TipAdapter, TipAdapterF])
def test_a_saved_cache_reloads_with_its_size_and_choice(cls, tiny_backbone, classnames, tmp_path):
    learner = cls(tiny_backbone, classnames, alpha=1.5)
    views = torch.randn(3, 10, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(2))
    learner.build_from_training_set(views, torch.arange(10) % 5)
    learner.alpha.fill_(4.25)
    if cls is TipAdapterF:
        assert list(learner.learnable_tensors()) == ["cache_keys"]
        with torch.no_grad():
            learner.cache_keys.add_(0.1)
    else:
        assert learner.learnable_tensors() == {}
    loaded = from_pretrained(save_pretrained(learner, tmp_path / "prompt"))
    f = torch.randn(4, tiny_backbone.embed_dim)
    assert loaded.cache_keys.shape == (10, tiny_backbone.embed_dim) and float(loaded.alpha) == 4.25
    with torch.no_grad():
        assert torch.allclose(loaded(features=f).logits, learner(features=f).logits, atol=1e-5)


def test_options_are_validated(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="tip_adapter_f.search_scale"):
        TipAdapterF(tiny_backbone, classnames, search_scale=[7.0])
    with pytest.raises(ConfigError, match="tip_adapter.alpha=-1"):
        TipAdapter(tiny_backbone, classnames, alpha=-1.0)
    assert math.isclose(TipAdapter(tiny_backbone, classnames).config.alpha, 1.17)
