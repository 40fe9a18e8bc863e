"""NPT: the simplex ETF, losses that vanish on it, options and refusals; NC metrics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.analysis.neural_collapse import neural_collapse_metrics
from vlprompt.errors import ConfigError
from vlprompt.learners.coop import CoOp
from vlprompt.regularizers.npt import NPT, lmc_loss, mmi_loss, procrustes_align, simplex_etf


@pytest.mark.parametrize("k,d", [(2, 4), (10, 32), (33, 32)])
def test_etf_has_unit_norms_and_equal_negative_cosines(k, d):
    m = simplex_etf(k, d, seed=3)
    assert m.shape == (k, d)
    assert torch.allclose(m.norm(dim=-1), torch.ones(k), atol=1e-5)
    cos = m @ m.t()
    off = ~torch.eye(k, dtype=torch.bool)
    assert torch.allclose(cos[off], torch.full((k * k - k,), -1.0 / (k - 1)), atol=1e-5)
    assert not torch.allclose(simplex_etf(k, d, seed=4), m)


def test_too_many_classes_for_the_dimension_names_the_fix():
    with pytest.raises(ConfigError, match="34 classes.*33.*gram"):
        simplex_etf(34, 32)


def test_losses_vanish_on_an_exact_etf_and_are_positive_otherwise():
    m = simplex_etf(6, 16, seed=0)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    for form in ("gram", "anchor", "dot_regression"):
        assert float(lmc_loss(m, form, m)) < 1e-6
    assert float(mmi_loss(m[labels], labels, m)) < 1e-10
    rnd = F.normalize(torch.randn(6, 16), dim=-1)
    for form in ("gram", "anchor", "dot_regression"):
        assert float(lmc_loss(rnd, form, m)) > 1e-3
    # class-balanced: two images of class 0 at distance^2 4 and 0 weigh as much as one class-1 image at 2
    f = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]]) / torch.tensor([[1.0], [2**0.5]])
    value = mmi_loss(f, torch.tensor([0, 0, 1]), t)
    expected = (2.0 + float(((f[2] - t[1]) ** 2).sum())) / 2
    assert abs(float(value) - expected) < 1e-6


def test_procrustes_recovers_a_rotation():
    m = simplex_etf(5, 8, seed=1)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    assert torch.allclose(procrustes_align(m, m @ q.t()), m @ q.t(), atol=1e-5)


def test_weights_are_required_and_anchor_mmi_needs_a_trainable_image_tower(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="lambda_lmc and lambda_mmi"):
        NPT()
    with pytest.raises(ConfigError, match="frozen"):
        NPT(lambda_lmc=1, lambda_mmi=1, mmi_form="anchor").check(CoOp(tiny_backbone, classnames, n_ctx=2))


def test_neural_collapse_metrics_on_collapsed_and_random_features():
    k, d = 5, 16
    m = simplex_etf(k, d, seed=0)
    labels = torch.arange(k).repeat(4)
    collapsed = neural_collapse_metrics(m[labels], labels, m)
    assert collapsed["nc1"] < 1e-8
    for key in ("image_equinorm", "image_equiangularity", "text_equinorm", "text_equiangularity", "self_duality"):
        assert collapsed[key] < 1e-6, key
    g = torch.Generator().manual_seed(0)
    noisy = neural_collapse_metrics(torch.randn(40, d, generator=g), torch.arange(k).repeat(8),
                                    torch.randn(k, d, generator=g))
    assert noisy["nc1"] > 0.5 and noisy["image_equiangularity"] > 0.05 and noisy["self_duality"] > 0.1
