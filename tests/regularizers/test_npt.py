"""NPT (a documented reconstruction): the simplex ETF, losses that vanish on it, options and refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.errors import ConfigError
from vlprompt.learners.coop import CoOp
from vlprompt.learners.maple import MaPLe
from vlprompt.learners.zeroshot import ZeroShotCLIP
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.npt import NPT, lmc_loss, mmi_loss, procrustes_align, simplex_etf

LMC_FORMS = ("gram", "anchor", "dot_regression")


def random_rotation(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q


@pytest.mark.parametrize("k,d", [(2, 4), (10, 32), (33, 32)])
def test_etf_has_unit_norms_and_pairwise_cosines_minus_one_over_k_minus_one(k, d):
    m = simplex_etf(k, d, seed=3)
    assert m.shape == (k, d)
    assert torch.allclose(m.norm(dim=-1), torch.ones(k), atol=1e-6)
    off = ~torch.eye(k, dtype=torch.bool)
    assert torch.allclose((m @ m.t())[off], torch.full((k * k - k,), -1.0 / (k - 1)), atol=1e-6)
    assert torch.equal(simplex_etf(k, d, seed=3), m)
    assert not torch.allclose(simplex_etf(k, d, seed=4), m)


def test_etf_errors_name_the_class_count_the_dimension_and_the_gram_option():
    with pytest.raises(ConfigError, match="K=34.*K-1=33.*d=32.*lmc_form='gram'"):
        simplex_etf(34, 32)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        simplex_etf(1, 8)


def test_losses_vanish_on_an_exact_etf_and_are_positive_otherwise():
    m = simplex_etf(6, 16, seed=0)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    for form in LMC_FORMS:
        assert abs(float(lmc_loss(m, form, m))) < 1e-6, form  # float32 rounding of unit norms
    assert float(mmi_loss(m[labels], labels, m)) < 1e-12
    text = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    for form in LMC_FORMS:
        assert float(lmc_loss(text, form, m)) > 1e-2, form
    assert float(mmi_loss(m[labels], labels, text)) > 1e-2


def test_gram_form_needs_no_anchor_orientation():
    m = simplex_etf(5, 8, seed=0)
    rotated = m @ random_rotation(8, 1)
    assert float(lmc_loss(rotated, "gram")) < 1e-10  # any rotated ETF is optimal
    assert float(lmc_loss(rotated, "anchor", m)) > 1e-2  # the anchor forms want this very orientation


def test_gram_form_by_hand():
    # K = 2 orthogonal unit vectors: the off-diagonal Gram entries are 0 instead of -1, so (1 + 1) / 2^2
    assert abs(float(lmc_loss(torch.eye(2), "gram")) - 0.5) < 1e-7


def test_class_balanced_mmi_by_hand():
    f = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    t = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=-1)
    # class 0: distances^2 4 and 0 (mean 2) weigh as much as class 1's single image at 2 - sqrt(2)
    expected = (2.0 + (2 - 2**0.5)) / 2
    assert abs(float(mmi_loss(f, torch.tensor([0, 0, 1]), t)) - expected) < 1e-6


def test_per_image_text_features_pull_each_image_to_its_own_prompts():
    m = simplex_etf(3, 4, seed=0)
    labels = torch.tensor([0, 2])
    per_image = torch.stack([m, -m])  # image 0 sees the ETF, image 1 its negation
    image = torch.stack([m[0], m[2]])
    # image 0 at distance 0 of its own target, image 1 at distance 2 (squared 4) of -m[2]
    assert abs(float(mmi_loss(image, labels, per_image)) - 2.0) < 1e-6
    # lmc per image, averaged: -m is not an ETF in the anchor sense, but has the ETF's Gram matrix
    assert float(lmc_loss(per_image, "gram")) < 1e-10
    assert abs(float(lmc_loss(per_image, "anchor", m)) - 1.0) < 1e-6  # (0 + 2) / 2


def test_procrustes_recovers_a_rotation():
    m = simplex_etf(5, 8, seed=1)
    target = m @ random_rotation(8, 2)
    assert torch.allclose(procrustes_align(m, target), target, atol=1e-5)


def test_options_are_required_and_validated():
    with pytest.raises(ConfigError, match="lambda_lmc and lambda_mmi"):
        NPT()
    with pytest.raises(ConfigError, match="lambda_lmc and lambda_mmi"):
        NPT(lambda_lmc=1.0)
    with pytest.raises(ConfigError, match="npt.lambda_mmi=-1"):
        NPT(lambda_lmc=1.0, lambda_mmi=-1)
    with pytest.raises(ConfigError, match="npt.lmc_form='cosine'.*'gram', 'anchor', 'dot_regression'"):
        NPT(lambda_lmc=1.0, lambda_mmi=1.0, lmc_form="cosine")
    with pytest.raises(ConfigError, match="npt.align.*anchor forms"):
        NPT(lambda_lmc=1.0, lambda_mmi=1.0, align=True)


def test_fixed_anchor_mmi_needs_a_trainable_image_tower(tiny_backbone, classnames):
    reg = NPT(lambda_lmc=1.0, lambda_mmi=1.0, mmi_form="anchor")
    with pytest.raises(ConfigError, match="learner 'coop': it needs prompted_image_tower"):
        reg.check(CoOp(tiny_backbone, classnames, n_ctx=2))
    with pytest.raises(ConfigError, match="learner 'zeroshot'.*learned_text_prompts"):
        reg.check(ZeroShotCLIP(tiny_backbone, classnames))
    NPT(lambda_lmc=1.0, lambda_mmi=1.0).check(CoOp(tiny_backbone, classnames, n_ctx=2))  # text targets: accepted
    reg.check(MaPLe(tiny_backbone, classnames, prompt_depth=2))  # vision prompts: accepted


def test_setup_builds_aligned_anchors_and_losses_reach_the_prompt(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    context = TrainContext(learner=learner)
    plain = NPT(lambda_lmc=0.5, lambda_mmi=2.0, lmc_form="anchor")
    plain.setup(context)
    aligned = NPT(lambda_lmc=0.5, lambda_mmi=2.0, lmc_form="anchor", align=True)
    aligned.setup(context)
    k, d = len(classnames), tiny_backbone.embed_dim
    assert plain.anchors.shape == aligned.anchors.shape == (k, d)
    assert torch.allclose(aligned.anchors @ aligned.anchors.t(), plain.anchors @ plain.anchors.t(), atol=1e-5)
    zero_shot = context.zero_shot_text_features()
    assert (aligned.anchors - zero_shot).norm() < (plain.anchors - zero_shot).norm()
    default = NPT(lambda_lmc=0.5, lambda_mmi=2.0)
    default.setup(context)
    assert default.anchors is None  # the default forms need no anchor matrix

    out = learner(features=torch.randn(4, d))
    labels = torch.tensor([0, 1, 1, 3])
    losses = aligned.extra_loss(context, out, {"labels": labels})
    assert torch.allclose(losses["npt_lmc"], 0.5 * lmc_loss(out.text_features, "anchor", aligned.anchors))
    assert torch.allclose(losses["npt_mmi"], 2.0 * mmi_loss(out.image_features, labels, out.text_features))
    grads = torch.autograd.grad(losses["npt_lmc"] + losses["npt_mmi"], learner.ctx)
    assert grads[0].abs().sum() > 0
