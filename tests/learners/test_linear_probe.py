"""Linear-probe CLIP (CoOp's lpclip): scikit-learn's fit is the probe's classifier, and the C search
follows CoOp's coarse sweep and binary search step by step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.linear_probe import COARSE_C, LinearProbe, search_c


def clustered(n_per_class: int, classes: int, width: int, seed: int, spread: float = 1.5):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, width, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), width, generator=g), labels


@pytest.mark.parametrize("classes", [2, 4])
def test_the_probe_scores_as_scikit_learns_fit(tiny_backbone, classnames, classes):
    names = classnames[:classes]
    feats, labels = clustered(6, classes, tiny_backbone.embed_dim, seed=0)
    probe = LinearProbe(tiny_backbone, names, c=0.5)
    probe.build_from_training_set(feats[None], labels)
    reference = LogisticRegression(solver="lbfgs", max_iter=1000, C=0.5).fit(feats.double().numpy(), labels.numpy())
    test, _ = clustered(5, classes, tiny_backbone.embed_dim, seed=1)
    with torch.no_grad():
        logits = probe(features=test).logits
    expected = torch.from_numpy(reference.decision_function(test.double().numpy())).float()
    if classes == 2:  # one decision value, the logit of class 1 against class 0
        expected = torch.stack([torch.zeros(len(test)), expected], dim=-1)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert torch.allclose(logits.softmax(-1), torch.from_numpy(reference.predict_proba(test.double().numpy())).float(),
                          atol=1e-5)


def test_the_search_is_coopls_coarse_sweep_then_binary_search_on_log_c():
    train = clustered(4, 3, 16, seed=2, spread=3.0)
    val = clustered(4, 3, 16, seed=3, spread=3.0)
    as_numpy = lambda x: (x[0].double().numpy(), x[1].numpy())  # noqa: E731
    chosen, tried = search_c(as_numpy(train), as_numpy(val), steps=3, max_iter=1000)
    assert [t["c"] for t in tried[:7]] == list(COARSE_C)
    coarse = [t["validation_accuracy"] for t in tried[:7]]
    peak = COARSE_C[coarse.index(max(coarse))]  # the first best
    left, right = peak / 10, peak * 10
    for step in range(3):
        a, b = tried[7 + 2 * step], tried[8 + 2 * step]
        assert (a["c"], b["c"]) == pytest.approx((left, right))
        mid = 10 ** ((math.log10(left) + math.log10(right)) / 2)
        if a["validation_accuracy"] < b["validation_accuracy"]:
            expected, left = right, mid
        else:
            expected, right = left, mid
    assert len(tried) == 13 and chosen == pytest.approx(expected)


def test_a_run_chooses_c_and_a_reload_scores_as_the_run(tiny_backbone, classnames, tmp_path):
    feats, labels = clustered(4, 5, tiny_backbone.embed_dim, seed=4)
    val_feats, val_labels = clustered(2, 5, tiny_backbone.embed_dim, seed=5)
    probe = LinearProbe(tiny_backbone, classnames, search_steps=2)
    probe.build_from_training_set(torch.stack([feats, feats + 0.01]), labels)  # two views: both are samples
    chosen = probe.select_on_validation(val_feats, val_labels)
    assert chosen["fits"] == 7 + 2 * 2 and float(probe.c) == pytest.approx(chosen["c"])
    loaded = from_pretrained(save_pretrained(probe, tmp_path / "probe"))
    test, _ = clustered(3, 5, tiny_backbone.embed_dim, seed=6)
    with torch.no_grad():
        assert torch.allclose(loaded(features=test).logits, probe(features=test).logits, atol=1e-5)
        reordered = loaded.for_classes(classnames[::-1])(features=test).logits
    assert torch.allclose(reordered, probe(features=test).logits.flip(-1), atol=1e-5)
    with pytest.raises(ConfigError, match="'grey cube'"):
        probe.for_classes(classnames[:-1] + ["grey cube"])
    with pytest.raises(ConfigError, match="linear_probe.c=0"):
        LinearProbe(tiny_backbone, classnames, c=0.0)
    assert np.isfinite(probe.weight.numpy()).all()
