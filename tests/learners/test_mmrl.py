"""MMRL: representation tokens in the upper blocks of both towers, against open_clip's own forward.

The oracle is open_clip's ``encode_text`` / ``encode_image`` with the tokens put in by forward hooks on
its own blocks (inserted after position 0 before the first receiving block, replacing those positions
before the later ones, the text mask grown to match), so it shares no code with the learner's block
runner. The scores and the loss are checked against MMRL's formulas written out here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.backbones.deep_prompts import encode_image_inserted, encode_text_inserted
from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.mmrl import MMRL, MMRLConfig
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.mmrl_loss import MMRLLoss


def images(backbone, n=3, seed=0):
    return torch.randn(n, 3, *backbone.visual.image_size, generator=torch.Generator().manual_seed(seed))


def inserting_hooks(blocks, tokens: dict, mask: bool, mix: float = 1.0):
    """Pre-hooks on ``blocks`` that put ``tokens[j]`` (n, W) after position 0 before block j: inserted the
    first time, after that mix * tokens + (1 - mix) * the states there; with ``mask`` the block's causal
    mask is rebuilt for the new length."""
    first = min(tokens)

    def make(j):
        def hook(_module, args, kwargs):
            x = args[0]
            t = tokens[j].unsqueeze(0).expand(x.shape[0], -1, -1)
            n = t.shape[1]
            if j != first:
                t = mix * t + (1 - mix) * x[:, 1:1 + n]
            rest = x[:, 1:] if j == first else x[:, 1 + n:]
            x = torch.cat([x[:, :1], t, rest], dim=1)
            if mask:
                n = x.shape[1]
                kwargs = {**kwargs, "attn_mask": torch.full((n, n), float("-inf")).triu(1)}
            return (x, *args[1:]), kwargs
        return hook

    return [blocks[j].register_forward_pre_hook(make(j), with_kwargs=True) for j in tokens]


def open_clip_text(backbone, sentences, tokens, mix=1.0):
    """open_clip's encode_text with the tokens inserted; the inserted positions are dropped after
    ``ln_final`` so open_clip's own end-of-text pooling reads the right token."""
    n = next(iter(tokens.values())).shape[0]
    model = backbone.model
    handles = inserting_hooks(model.transformer.resblocks, tokens, mask=True, mix=mix)
    handles.append(model.ln_final.register_forward_hook(lambda _m, _a, out: torch.cat([out[:, :1], out[:, 1 + n:]], 1)))
    try:
        with torch.no_grad():
            return model.encode_text(backbone.tokenize(sentences))
    finally:
        for h in handles:
            h.remove()


def open_clip_image(backbone, x, tokens, mix=1.0):
    """open_clip's encode_image with the tokens inserted, and the transformer's output tokens."""
    visual = backbone.visual
    seen = {}
    handles = inserting_hooks(visual.transformer.resblocks, tokens, mask=False, mix=mix)
    handles.append(visual.transformer.register_forward_hook(lambda _m, _a, out: seen.setdefault("out", out)))
    try:
        with torch.no_grad():
            return backbone.model.encode_image(x), seen["out"]
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("variant", ["mmrl", "mmrl++"])
def test_tokens_enter_both_towers_as_open_clip_computes_them(tiny_backbone, classnames, variant):
    torch.manual_seed(0)
    mmrl = MMRL(tiny_backbone, classnames, first_block=1, n_tokens=3, rep_dim=16, variant=variant, beta=0.6)
    mix = 0.6 if variant == "mmrl++" else 1.0
    with torch.no_grad():
        for name, p in mmrl.learnable_tensors().items():  # distinct maps per block, so an off-by-one block shows
            if name.startswith("to_") or name.startswith("proj_"):
                p.normal_(0, 0.5)
        text_tokens, image_tokens = mmrl.projected_tokens()
        sentences = [f"a photo of a {c.replace('_', ' ')}." for c in classnames]
        expected_text = F.normalize(open_clip_text(tiny_backbone, sentences, text_tokens, mix), dim=-1)
        assert torch.allclose(mmrl.text_features(), expected_text, atol=1e-5)
        assert not torch.allclose(mmrl.text_features(), mmrl.frozen_text, atol=1e-3)

        x = images(tiny_backbone)
        pooled, out = open_clip_image(tiny_backbone, x, image_tokens, mix)
        projection = (tiny_backbone.visual.proj + mmrl.proj_A @ mmrl.proj_B) if variant == "mmrl++" else mmrl.proj_rep
        rep = tiny_backbone.visual.ln_post(out[:, 1:4]).mean(1) @ projection
        assert torch.allclose(mmrl.encode_images(x), torch.cat([pooled, rep], -1), atol=1e-5)


def test_mmrl_plus_plus_starts_from_one_map_per_tower_and_the_frozen_projection(tiny_backbone, classnames):
    """MMRL++'s residuals A_i B_i start at zero (B = 0), so every block's map is the shared one and the
    representation projection is CLIP's own; the maps differ per block once B moves."""
    mmrl = MMRL(tiny_backbone, classnames, first_block=1, variant="mmrl++")
    with torch.no_grad():
        text, image = mmrl.projected_tokens()
        for tokens, maps in ((text, mmrl.to_text), (image, mmrl.to_image)):
            shared = F.linear(mmrl.rep_tokens, maps.weight, maps.bias[0])
            assert all(torch.equal(t, shared) for t in tokens.values())
        assert torch.equal(mmrl.rep_projection(), tiny_backbone.visual.proj)
        mmrl.to_text.B[1].normal_()
        assert not torch.allclose(mmrl.projected_tokens()[0][2], mmrl.projected_tokens()[0][1])
    assert "proj_rep" not in mmrl.learnable_tensors() and not tiny_backbone.visual.proj.requires_grad


def test_without_tokens_the_towers_are_the_frozen_model(tiny_backbone, classnames):
    with torch.no_grad():
        ids = tiny_backbone.tokenize([f"a photo of a {c}." for c in classnames])
        emb, eot = tiny_backbone.text.embed(ids), tiny_backbone.text.eot_positions(ids)
        assert torch.allclose(encode_text_inserted(tiny_backbone.text, emb, eot, {}),
                              tiny_backbone.model.encode_text(ids), atol=1e-5)
        x = images(tiny_backbone)
        pooled, rep = encode_image_inserted(tiny_backbone.visual, x, {})
        assert rep is None and torch.allclose(pooled, tiny_backbone.model.encode_image(x), atol=1e-5)


def test_zero_tokens_and_projections_leave_only_the_class_token_path(tiny_backbone, classnames):
    """The hand test of the issue, made exact: zero representation tokens, maps and proj_rep give zero
    representation logits, so the base scores are alpha times the class-token scores. Zero tokens are
    still tokens: they pass through LayerNorm's bias into attention, so the class-token scores are not
    the frozen model's (only no tokens at all give those: the test above)."""
    mmrl = MMRL(tiny_backbone, classnames, first_block=2, alpha=0.7).eval()
    with torch.no_grad():
        for p in mmrl.learnable_tensors().values():
            p.zero_()
        x = images(tiny_backbone)
        out = mmrl(images=x)
        assert torch.equal(out.extras["representation_logits"], torch.zeros_like(out.logits))
        mmrl.set_inference_split("base")
        assert torch.allclose(mmrl(images=x).logits, 0.7 * out.logits, atol=1e-6)
        frozen = tiny_backbone.logit_scale * F.normalize(tiny_backbone.encode_image(x), dim=-1) @ mmrl.frozen_text.t()
        assert not torch.allclose(out.logits, frozen, atol=1e-3)


def test_base_new_and_agnostic_paths_follow_the_official_test(tiny_backbone, classnames):
    torch.manual_seed(1)
    mmrl = MMRL(tiny_backbone, classnames, first_block=2, alpha=0.6)
    x = images(tiny_backbone)
    with torch.no_grad():
        features = mmrl.encode_images(x)
        d = tiny_backbone.embed_dim
        text = mmrl.text_features()
        by_hand = {name: tiny_backbone.logit_scale * F.normalize(features[:, i * d:(i + 1) * d], dim=-1) @ text.t()
                   for i, name in enumerate(("class", "rep"))}
        training = mmrl.train()(images=x)
        mmrl.eval()
        scores = {}
        for split in ("base", "new", None):
            mmrl.set_inference_split(split)
            scores[split] = mmrl(images=x).logits
    assert torch.allclose(scores["base"], 0.6 * by_hand["class"] + 0.4 * by_hand["rep"], atol=1e-4)
    assert torch.allclose(scores["new"], by_hand["class"], atol=1e-4)
    assert torch.equal(scores[None], scores["new"])
    assert not torch.allclose(scores["base"], scores["new"], atol=1e-3)
    assert torch.allclose(training.logits, by_hand["class"], atol=1e-4)  # training: the trainer's CE on these
    with pytest.raises(ConfigError, match="'all'"):
        mmrl.set_inference_split("all")


def test_loss_is_mmrls_objective(tiny_backbone, classnames):
    """Trainer CE plus the mmrl_loss terms = alpha CE + (1 - alpha) CE_rep + w (1 - cos img) + w (1 - cos text)."""
    torch.manual_seed(2)
    mmrl = MMRL(tiny_backbone, classnames, first_block=2, alpha=0.7).train()
    x, labels = images(tiny_backbone, 4), torch.tensor([0, 1, 2, 3])
    out = mmrl(images=x)
    reg = MMRLLoss(weight=3.0)
    terms = reg.extra_loss(TrainContext(learner=mmrl), out, {"images": x, "labels": labels})
    total = F.cross_entropy(out.logits, labels) + sum(terms.values())
    d = tiny_backbone.embed_dim
    features = mmrl.encode_images(x)
    text = mmrl.text_features()
    img = F.normalize(features[:, :d], dim=-1)
    rep = F.normalize(features[:, d:], dim=-1)
    frozen_img = F.normalize(tiny_backbone.encode_image(x), dim=-1)
    s = tiny_backbone.logit_scale
    expected = (0.7 * F.cross_entropy(s * img @ text.t(), labels) + 0.3 * F.cross_entropy(s * rep @ text.t(), labels)
                + 3.0 * (1 - (img * frozen_img).sum(-1).mean()) + 3.0 * (1 - (text * mmrl.frozen_text).sum(-1).mean()))
    assert torch.allclose(total, expected, atol=1e-5)


@pytest.mark.parametrize("variant", ["mmrl", "mmrl++"])
def test_artifact_round_trip_keeps_both_paths(tiny_backbone, classnames, tmp_path, variant):
    torch.manual_seed(3)
    mmrl = MMRL(tiny_backbone, classnames, first_block=2, n_tokens=2, rep_dim=32, variant=variant).eval()
    with torch.no_grad():
        for p in mmrl.learnable_tensors().values():  # MMRL++'s B factors start at zero: move every tensor
            p.add_(torch.randn_like(p) * 0.05)
    path = save_pretrained(mmrl, tmp_path / "mmrl")
    x = images(tiny_backbone)
    reloaded = from_pretrained(path, backbone=tiny_backbone).eval()
    assert reloaded.config == mmrl.config
    with torch.no_grad():
        for split in ("base", "new"):
            mmrl.set_inference_split(split)
            reloaded.set_inference_split(split)
            assert torch.equal(reloaded(images=x).logits, mmrl(images=x).logits)
        new = ["orange cross", "black diamond"]
        assert torch.equal(from_pretrained(path, new, tiny_backbone).text_features(),
                           mmrl.for_classes(new).text_features())


def test_bad_options_are_refused_naming_the_option(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="mmrl.alpha"):
        MMRLConfig.from_mapping({"alpha": 1.5})
    with pytest.raises(ConfigError, match="mmrl.n_tokens"):
        MMRLConfig.from_mapping({"n_tokens": 0})
    with pytest.raises(ConfigError, match="mmrl.variant"):
        MMRLConfig.from_mapping({"variant": "mmrl+"})
    with pytest.raises(ConfigError, match="mmrl.beta"):
        MMRLConfig.from_mapping({"beta": -0.1})
    with pytest.raises(ConfigError, match="mmrl.first_block=4 .* between 0 and 3"):
        MMRL(tiny_backbone, classnames, first_block=4)


def test_checkpointed_class_chunks_give_the_same_features_and_gradients(tiny_backbone, classnames):
    torch.manual_seed(4)
    mmrl = MMRL(tiny_backbone, classnames, first_block=2)
    results = []
    for chunk in (None, 2):
        mmrl.text_chunk = chunk
        mmrl.zero_grad()
        features = mmrl.text_features()
        features.square().sum().backward()
        results.append((features.detach(), {n: p.grad.clone() for n, p in mmrl.learnable_tensors().items()
                                            if p.grad is not None}))
    (whole, whole_grads), (chunked, chunked_grads) = results
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert whole_grads.keys() == chunked_grads.keys() and "rep_tokens" in whole_grads
    assert all(torch.allclose(whole_grads[n], chunked_grads[n], atol=1e-6) for n in whole_grads)


def test_mmrl_base_to_new_run_records_the_split_aware_and_the_split_agnostic_numbers(folder_base_to_new_run):
    """Issue 24: an mmrl run writes both numbers; told "new", MMRL scores through its class-token path, which is
    also its path when not told, so the two new-class accuracies are one number."""
    import json

    from vlprompt.engine.run import harmonic_mean

    run_dir = folder_base_to_new_run("train.epochs=1", "learner.name=mmrl", "learner.options.first_block=2",
                                     "regularizers=[{name: mmrl_loss}]")
    saved = json.loads((run_dir / "results.json").read_text())
    m = saved["metrics"]
    assert saved["inference"] == "split_aware" and saved["method"] == "mmrl"
    assert m["new"]["split_aware"]["accuracy"] == m["new"]["accuracy"]
    assert m["base"]["split_aware"]["num_samples"] == m["base"]["num_samples"] == 12
    assert m["split_aware_harmonic_mean"] == pytest.approx(
        harmonic_mean(m["base"]["split_aware"]["accuracy"], m["new"]["split_aware"]["accuracy"]))
    history = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert all("loss_mmrl_loss_rep" in r for r in history)
