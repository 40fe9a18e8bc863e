"""PLOT (docs/methods/plot.md): Sinkhorn's plan, the transport score, region features and Nemesis on PLOT,
checked against hand computations and invariants."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F

from vlprompt.backbones import Backbone, BackboneIdentity
from vlprompt.data.feature_cache import FeatureCache
from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.learners.base import clip_logits
from vlprompt.learners.coop import CoOp
from vlprompt.learners.plot import PLOT
from vlprompt.learners.transport import sinkhorn_plan, transport_similarity
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.nemesis import Nemesis


def test_sinkhorn_plan_of_a_symmetric_2x2_cost_by_hand():
    # cost [[0, 1], [1, 0]], marginals (1/2, 1/2): by symmetry the plan is K / (2 (1 + k)), k = exp(-1/eps)
    eps = 0.5
    k = math.exp(-1 / eps)
    plan = sinkhorn_plan(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), eps, max_iters=100, tol=1e-9)[0]
    expected = torch.tensor([[1.0, k], [k, 1.0]]) / (2 * (1 + k))
    assert torch.allclose(plan, expected, atol=1e-7)


def test_sinkhorn_plan_meets_both_marginals_and_sharpens_as_eps_falls():
    cost = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(0))
    plan = sinkhorn_plan(cost, eps=0.1, max_iters=1000, tol=1e-10)
    assert torch.allclose(plan.sum(-1), torch.full((3, 5), 1 / 5), atol=1e-6)
    assert torch.allclose(plan.sum(-2), torch.full((3, 4), 1 / 4), atol=1e-6)
    sharp = sinkhorn_plan(cost, eps=0.01, max_iters=5000, tol=1e-12)
    assert (sharp * cost).sum() < (plan * cost).sum()  # a smaller eps transports at a lower cost


def test_one_region_or_one_prompt_reduce_the_score_to_a_mean_cosine():
    g = torch.Generator().manual_seed(1)
    tokens = F.normalize(torch.randn(2, 5, 8, generator=g), dim=-1)
    prompts = F.normalize(torch.randn(3, 4, 8, generator=g), dim=-1)
    # one image feature: the whole mass goes to the prompts in equal parts
    one_region = transport_similarity(tokens[:, :1], prompts, 0.1, 100, 0.01)
    assert torch.allclose(one_region, torch.einsum("bd,nkd->bkn", tokens[:, 0], prompts).mean(-1), atol=1e-6)
    # one prompt: every region sends its 1/M to it
    one_prompt = transport_similarity(tokens, prompts[:1], 0.1, 100, 0.01)
    assert torch.allclose(one_prompt, torch.einsum("bmd,kd->bkm", tokens, prompts[0]).mean(-1), atol=1e-6)


def test_the_plan_carries_no_gradient_only_the_similarities_do():
    tokens = F.normalize(torch.randn(1, 3, 8), dim=-1)
    prompts = F.normalize(torch.randn(2, 2, 8), dim=-1).requires_grad_()
    transport_similarity(tokens, prompts, 0.1, 100, 0.01).sum().backward()
    sim = torch.einsum("bmd,nkd->bkmn", tokens, prompts.detach()).reshape(2, 3, 2)
    plan = sinkhorn_plan(1 - sim, 0.1, 100, 0.01)
    expected = torch.einsum("kmn,md->nkd", plan, tokens[0])  # d/dg_nk of sum T_mn <f_m, g_nk>
    assert torch.allclose(prompts.grad, expected, atol=1e-6)


def test_region_tokens_of_the_vit_start_with_the_pooled_feature(tiny_backbone):
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tokens = tiny_backbone.encode_image_tokens(images)
    assert tokens.shape == (2, tiny_backbone.image_tokens, tiny_backbone.embed_dim) == (2, 65, 128)
    assert torch.allclose(tokens[:, 0], tiny_backbone.encode_image(images), atol=1e-5)


def resnet_backbone() -> Backbone:
    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
                           text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2})
    preprocess = {"image_size": 64, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    return Backbone(model, open_clip.get_tokenizer("vlprompt-tiny"), preprocess,
                    BackboneIdentity("small-resnet", "random", "0" * 64))


def test_region_tokens_of_a_resnet_are_its_attention_pool_queried_at_every_position():
    backbone = resnet_backbone()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tokens = backbone.encode_image_tokens(images)
    assert tokens.shape == (2, 1 + 2 * 2, 32) and backbone.image_tokens == 5
    assert torch.allclose(tokens[:, 0], backbone.encode_image(images), atol=1e-5)
    # every output is multi-head attention with that position as the query, written out by hand
    visual, pool = backbone.visual, backbone.visual.attnpool
    with torch.no_grad():
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(1, keepdim=True), x], 1) + pool.positional_embedding
        q, k, v = pool.q_proj(x), pool.k_proj(x), pool.v_proj(x)
        heads = pool.num_heads

        def split(t):
            return t.reshape(2, 5, heads, -1).transpose(1, 2)

        attn = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(q.shape[-1] / heads), -1)
        expected = pool.c_proj((attn @ split(v)).transpose(1, 2).reshape(2, 5, -1))
    assert torch.allclose(tokens, expected, atol=1e-5)


def test_plot_with_one_prompt_on_uniform_regions_is_coop(tiny_backbone, classnames):
    """One prompt and every region equal to one feature: the plan is uniform and the score is CLIP's cosine."""
    torch.manual_seed(0)
    plot = PLOT(tiny_backbone, classnames, n_prompts=1, n_ctx=4)
    coop = CoOp(tiny_backbone, classnames, n_ctx=4)
    with torch.no_grad():
        coop.ctx.copy_(plot.ctx[0])
    feature = torch.randn(3, 128, generator=torch.Generator().manual_seed(2))
    tokens = feature[:, None].expand(-1, tiny_backbone.image_tokens, -1)
    with torch.no_grad():
        assert torch.allclose(plot(features=tokens).logits, coop(features=feature).logits, atol=1e-5)


def test_class_features_pool_the_prompts_before_normalising_and_the_logits_rule_adds_clip_logits(
        tiny_backbone, classnames):
    torch.manual_seed(0)
    plot = PLOT(tiny_backbone, classnames, n_prompts=3, n_ctx=4)
    tokens = torch.randn(2, tiny_backbone.image_tokens, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        raw = plot.encode_context(plot.ctx)
        assert raw.shape == (4, len(classnames), 128)
        assert torch.allclose(raw[0], raw[1:].mean(0))
        out = plot(features=tokens)
        assert torch.allclose(out.text_features, F.normalize(raw[1:].mean(0), dim=-1), atol=1e-6)
        assert torch.allclose(out.image_features, F.normalize(tokens[:, 0], dim=-1))
        with_global = PLOT(tiny_backbone, classnames, n_prompts=3, n_ctx=4, global_feature="logits")
        with_global.ctx.data.copy_(plot.ctx)
        added = with_global(features=tokens).logits - out.logits
    assert torch.allclose(added, clip_logits(out.image_features, out.text_features, tiny_backbone.logit_scale),
                          atol=1e-5)


def test_the_transport_rule_puts_the_pooled_feature_among_the_regions(tiny_backbone, classnames):
    torch.manual_seed(0)
    plot = PLOT(tiny_backbone, classnames, n_prompts=2, n_ctx=4, global_feature="transport")
    tokens = torch.randn(2, tiny_backbone.image_tokens, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        text = plot.text_features()
        expected = tiny_backbone.logit_scale * transport_similarity(F.normalize(tokens, dim=-1), text[1:], 0.1, 100,
                                                                   0.01)
        assert torch.allclose(plot(features=tokens).logits, expected, atol=1e-6)


def test_options_are_checked_and_towers_without_regions_refused(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="plot.n_prompts=0 must be at least 1"):
        PLOT(tiny_backbone, classnames, n_prompts=0)
    with pytest.raises(ConfigError, match="global_feature"):
        PLOT(tiny_backbone, classnames, global_feature="both")
    with pytest.raises(ConfigError, match="sinkhorn_eps"):
        PLOT(tiny_backbone, classnames, sinkhorn_eps=0)
    vit = tiny_backbone.visual
    saved = vit.pool_type
    vit.pool_type = "avg"
    try:
        with pytest.raises(BackboneError, match="class-token pooling"):
            PLOT(tiny_backbone, classnames)
    finally:
        vit.pool_type = saved


def test_token_features_are_cached_under_their_own_key(tiny_backbone, tmp_path, image_folder_factory, classnames):
    root = image_folder_factory(tmp_path / "imgs", classnames, per_class=1, splits=("test",))
    records = [ImageRecord(str(f), k, d.name) for k, d in enumerate(sorted((root / "test").iterdir()))
               for f in sorted(d.iterdir())]
    data = DatasetSplits("tiny", classnames, [], [], records)
    cache = FeatureCache(tmp_path / "cache")
    pooled = cache.features(tiny_backbone, data, records)
    tokens = cache.features(tiny_backbone, data, records, tokens=True)
    assert pooled.shape == (1, len(records), 128) and tokens.shape == (1, len(records), 65, 128)
    assert torch.allclose(tokens[:, :, 0], pooled, atol=1e-5)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert torch.equal(cache.features(tiny_backbone, data, records, tokens=True), tokens)  # read back from disk


def test_nemesis_pun_on_plot_sums_every_prompts_norms_over_the_positions(tiny_backbone, classnames):
    """plot_nemesis.py: Σ_{n,j} ω ||ctx_nj|| / M (the count of weighted positions), times λ(e)."""
    torch.manual_seed(0)
    plot = PLOT(tiny_backbone, classnames, n_prompts=4, n_ctx=3)
    nemesis = Nemesis(beta=1, omega=10.0)
    ctx = TrainContext(learner=plot, dataset="tiny", epoch=0, max_epochs=1)
    nemesis.setup(ctx)
    features = torch.randn(2, tiny_backbone.image_tokens, 128)
    with torch.no_grad():
        loss = nemesis.extra_loss(ctx, plot(features=features), {"features": features, "labels": torch.zeros(2)})
    schedule = 1 - 1 / (1 + math.exp(-0.2 * (0 - 0.5)))
    expected = schedule * 10.0 * plot.ctx.norm(dim=-1).sum() / 3
    assert torch.allclose(loss["nemesis_pun"], expected)


def test_nemesis_pan_on_plot_rescales_a_position_of_every_prompt_and_scores_the_regions(tiny_backbone, classnames):
    torch.manual_seed(0)
    plot = PLOT(tiny_backbone, classnames, n_prompts=2, n_ctx=3, global_feature="transport")
    nemesis = Nemesis(beta=0, omega=1.0, n_positions=3, tau=0.001)
    nemesis.setup(TrainContext(learner=plot, dataset="tiny"))
    features = torch.randn(6, tiny_backbone.image_tokens, 128, generator=torch.Generator().manual_seed(4))
    labels = torch.arange(6) % len(classnames)
    weights = nemesis.pan_weights(plot, features, labels)

    def correct(ctx):
        copy = PLOT(tiny_backbone, classnames, n_prompts=2, n_ctx=3, global_feature="transport")
        copy.ctx.data.copy_(ctx)
        with torch.no_grad():
            return int((copy(features=features).logits.argmax(-1) == labels).sum())

    original = correct(plot.ctx)
    for p in range(3):
        rescaled = plot.ctx.detach().clone()
        rescaled[:, p] *= 0.001
        assert weights[p] == (1.0 if correct(rescaled) > original else 0.0)


def test_features_larger_than_the_memory_are_refused_before_any_image_is_encoded(tiny_backbone, tmp_path,
                                                                                image_folder_factory, classnames):
    root = image_folder_factory(tmp_path / "imgs", classnames, per_class=1, splits=("train",))
    records = [ImageRecord(str(f), k, d.name) for k, d in enumerate(sorted((root / "train").iterdir()))
               for f in sorted(d.iterdir())]
    data = DatasetSplits("tiny", classnames, records, [], [])
    views = 10**7  # 5 images x 65 tokens x 128 floats: 1.5 TiB
    with pytest.raises(ConfigError, match=r"train features of 5 images x 10000000 views would take .* GiB, more than "
                                          r"this machine's .*train.views"):
        FeatureCache(tmp_path / "cache").features(tiny_backbone, data, records, views=views, tokens=True,
                                                  desc="train features")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
