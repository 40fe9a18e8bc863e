"""Neural-collapse metrics: ~0 on collapsed features, positive on random ones, hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlprompt.analysis.neural_collapse import neural_collapse_metrics
from vlprompt.regularizers.npt import simplex_etf

KEYS = ("nc1", "image_equinorm", "image_equiangularity", "text_equinorm", "text_equiangularity", "self_duality")


def test_perfectly_collapsed_features_score_zero():
    k, d = 5, 16
    m = simplex_etf(k, d, seed=0)
    labels = torch.arange(k).repeat(4)
    scale = torch.linspace(0.5, 3.0, len(labels)).unsqueeze(1)  # image features are normalised first
    metrics = neural_collapse_metrics(scale * m[labels], labels, 2.0 * m)
    assert set(metrics) == set(KEYS)
    for key in KEYS:
        assert abs(metrics[key]) < 1e-6, key


def test_random_features_score_clearly_positive():
    g = torch.Generator().manual_seed(0)
    k, d = 5, 16
    metrics = neural_collapse_metrics(torch.randn(40, d, generator=g), torch.arange(k).repeat(8),
                                      torch.randn(k, d, generator=g))
    assert metrics["nc1"] > 1.0
    for key in KEYS[1:]:
        assert metrics[key] > 0.05, key


def test_text_measures_by_hand():
    # orthonormal vectors, once centred, are a simplex ETF: both text measures vanish
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    images = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    metrics = neural_collapse_metrics(images, labels, torch.eye(3))
    assert metrics["text_equinorm"] < 1e-12 and metrics["text_equiangularity"] < 1e-12
    # unit vectors at 0, 90 and 180 degrees: centred (1, -1/3), (0, 2/3), (-1, -1/3)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    metrics = neural_collapse_metrics(torch.randn(6, 2, generator=torch.Generator().manual_seed(2)), labels, w)
    r = math.sqrt(10)
    # norms r/3, 2/3, r/3: mean (2r + 2)/9, Bessel std (r - 2)/sqrt(27)
    assert abs(metrics["text_equinorm"] - (r - 2) / math.sqrt(27) * 9 / (2 * r + 2)) < 1e-9
    # cosines -1/r, -4/5, -1/r against the ETF's -1/2
    assert abs(metrics["text_equiangularity"] - (2 * (0.5 - 1 / r) + 0.3) / 3) < 1e-9


def test_nc1_and_self_duality_match_a_direct_computation():
    g = torch.Generator().manual_seed(3)
    k, d, n = 4, 6, 24
    feats, text = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(k, d, generator=g)
    labels = torch.arange(n) % k
    h = (feats / feats.norm(dim=1, keepdim=True)).numpy()
    y = labels.numpy()
    mu_g = h.mean(0)
    means = np.stack([h[y == c].mean(0) for c in range(k)])
    s_w = sum(np.outer(h[i] - means[y[i]], h[i] - means[y[i]]) for i in range(n)) / n
    s_b = sum(np.outer(m - mu_g, m - mu_g) for m in means) / k
    nc1 = np.trace(s_w @ np.linalg.pinv(s_b, rcond=1e-6)) / k
    w = text.double().numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    w = w - w.mean(0)
    c = means - mu_g
    duality = np.sum((w / np.linalg.norm(w) - c / np.linalg.norm(c)) ** 2)
    metrics = neural_collapse_metrics(feats, labels, text)
    assert abs(metrics["nc1"] - nc1) < 1e-8 * max(1.0, nc1)
    assert abs(metrics["self_duality"] - duality) < 1e-8


def test_classes_missing_from_the_labels_are_left_out_of_the_image_side():
    m = simplex_etf(3, 8, seed=0)
    text = torch.cat([m, torch.randn(2, 8, generator=torch.Generator().manual_seed(0))])  # K = 5
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    metrics = neural_collapse_metrics(m[labels], labels, text)
    assert metrics["nc1"] < 1e-8 and metrics["self_duality"] < 1e-8  # over the 3 classes present
    assert metrics["text_equiangularity"] > 0.05  # the text side covers all 5 classes


def test_bad_inputs_are_refused_with_the_expected_shapes():
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        neural_collapse_metrics(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]), torch.randn(3, 8))
    with pytest.raises(ValueError, match="at least 2 classes"):
        neural_collapse_metrics(torch.randn(4, 8), torch.zeros(4, dtype=torch.long), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"\(N, D\).*\(K, D\)"):
        neural_collapse_metrics(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]), torch.randn(3, 7))
