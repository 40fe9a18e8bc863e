"""IVLP: independent deep prompts in both towers, against open_clip's own forward.

The oracle is open_clip's ``encode_image`` / ``encode_text`` with the prompts put in by forward
hooks on open_clip's own modules (``ln_pre``, the token embedding, the blocks), so it shares no code
with the block runner the learner uses.
"""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from vlprompt.backbones import Backbone, BackboneIdentity
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.ivlp import IVLP, IVLPConfig


def sentences(classnames):
    return [f"a photo of a {c.replace('_', ' ')}." for c in classnames]


def with_hooks(hooks, compute):
    """Run ``compute()`` with ``(module, kind, fn)`` hooks installed on open_clip's modules."""
    handles = [m.register_forward_pre_hook(fn) if kind == "pre" else m.register_forward_hook(fn)
               for m, kind, fn in hooks]
    try:
        with torch.no_grad():
            return compute()
    finally:
        for h in handles:
            h.remove()


def tile(tokens, rows):
    return tokens.unsqueeze(0).expand(rows, -1, -1)


def open_clip_image(backbone, images, shallow, deep):
    """open_clip's encode_image with ``shallow`` appended at ln_pre's input and deep[j] replacing the
    last tokens before block j."""
    visual = backbone.visual
    hooks = [(visual.ln_pre, "pre", lambda _m, a: (torch.cat([a[0], tile(shallow, a[0].shape[0])], 1),))]
    for j, p in deep.items():
        hooks.append((visual.transformer.resblocks[j], "pre",
                      lambda _m, a, p=p: (torch.cat([a[0][:, : -len(p)], tile(p, a[0].shape[0])], 1), *a[1:])))
    return with_hooks(hooks, lambda: F.normalize(backbone.model.encode_image(images), dim=-1))


def open_clip_text(backbone, classnames, ctx, deep):
    """open_clip's encode_text of "a photo of a {class}." with positions 1..M of the token embeddings
    set to ``ctx`` and, before block j, to deep[j]."""
    m = len(ctx)

    def put(x, p):
        return torch.cat([x[:, :1], tile(p, x.shape[0]), x[:, 1 + m :]], 1)

    hooks = [(backbone.text.token_embedding, "post", lambda _m, _a, out: put(out, ctx))]
    for j, p in deep.items():
        hooks.append((backbone.text.transformer.resblocks[j], "pre", lambda _m, a, p=p: (put(a[0], p), *a[1:])))
    ids = backbone.tokenize(sentences(classnames))
    return with_hooks(hooks, lambda: F.normalize(backbone.model.encode_text(ids), dim=-1))


def test_shallow_word_init_reproduces_open_clip_on_the_hand_crafted_sentence(tiny_backbone, classnames):
    learner = IVLP(tiny_backbone, classnames, n_ctx_text=2, prompt_depth_text=1, prompt_depth_vision=1)
    with torch.no_grad():
        expected = F.normalize(tiny_backbone.model.encode_text(tiny_backbone.tokenize(sentences(classnames))), dim=-1)
        assert (learner.text_features() - expected).abs().max() < 1e-5


def test_both_towers_equal_open_clip_with_the_prompts_hooked_in(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = IVLP(tiny_backbone, classnames, n_ctx_text=2, n_ctx_vision=3, prompt_depth_text=3, prompt_depth_vision=4)
    with torch.no_grad():
        learner.ctx.add_(0.1 * torch.randn_like(learner.ctx))  # as if trained
    images = torch.randn(2, 3, 64, 64)
    deep_v = {j: learner.deep_vision[str(j)].detach() for j in (1, 2, 3)}
    deep_t = {j: learner.deep_text[str(j)].detach() for j in (1, 2)}
    expected_image = open_clip_image(tiny_backbone, images, learner.vision_ctx.detach(), deep_v)
    expected_text = open_clip_text(tiny_backbone, classnames, learner.ctx.detach(), deep_t)
    with torch.no_grad():
        assert (F.normalize(learner.encode_images(images), dim=-1) - expected_image).abs().max() < 1e-5
        assert (learner.text_features() - expected_text).abs().max() < 1e-5
        # the oracle sees every prompt: dropping the last deep prompt of each tower changes its answer
        assert (open_clip_image(tiny_backbone, images, learner.vision_ctx, {1: deep_v[1], 2: deep_v[2]})
                - expected_image).abs().max() > 1e-4
        assert (open_clip_text(tiny_backbone, classnames, learner.ctx, {1: deep_t[1]})
                - expected_text).abs().max() > 1e-4


def test_the_towers_are_independent(tiny_backbone, classnames):
    """No coupling: text prompts never reach the image features, nor vision prompts the text features."""
    torch.manual_seed(0)
    learner = IVLP(tiny_backbone, classnames, prompt_depth_text=3, prompt_depth_vision=3)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        image, text = learner.encode_images(images), learner.text_features()
        for p in (learner.ctx, *learner.deep_text.values()):
            p.add_(torch.randn_like(p))
        assert torch.equal(learner.encode_images(images), image)
        assert (learner.text_features() - text).abs().max() > 1e-3
        text = learner.text_features()
        for p in (learner.vision_ctx, *learner.deep_vision.values()):
            p.add_(torch.randn_like(p))
        assert torch.equal(learner.text_features(), text)
        assert (learner.encode_images(images) - image).abs().max() > 1e-3


def test_tensor_names_shapes_and_gradients(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = IVLP(tiny_backbone, classnames, n_ctx_text=2, n_ctx_vision=3, prompt_depth_text=3, prompt_depth_vision=4)
    tensors = learner.learnable_tensors()
    assert {n: tuple(p.shape) for n, p in tensors.items()} == {
        "ctx": (2, 128), "deep_text.1": (2, 128), "deep_text.2": (2, 128),
        "vision_ctx": (3, 128), "deep_vision.1": (3, 128), "deep_vision.2": (3, 128), "deep_vision.3": (3, 128)}
    # all but the word-initialised context start as N(0, 0.02^2)
    rest = torch.cat([p.detach().flatten() for n, p in tensors.items() if n != "ctx"])
    assert 0.015 < float(rest.std()) < 0.025 and abs(float(rest.mean())) < 0.005
    out = learner(images=torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 5) and out.text_features.shape == (5, tiny_backbone.embed_dim)
    F.cross_entropy(out.logits, torch.tensor([0, 1])).backward()
    for name, p in tensors.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in tiny_backbone.parameters())


def meta_backbone(name: str) -> Backbone:
    """An open_clip model built from its config on the meta device: true shapes, no weights."""
    with torch.device("meta"):
        model = open_clip.CLIP(**open_clip.get_model_config(name))
    return Backbone(model, open_clip.get_tokenizer(name), {"image_size": 224, "mean": (0.5,) * 3, "std": (0.5,) * 3},
                    BackboneIdentity(name, "random", "0" * 64))


def test_parameter_counts_for_vit_b16():
    """J_t * M_t * 512 + J_v * M_v * 768 (the shallow prompt plus J - 1 deep ones per tower)."""
    backbone = meta_backbone("ViT-B-16")

    def count(**options):
        return sum(p.numel() for p in IVLP(backbone, ["cat", "dog"], **options).learnable_tensors().values())

    # MaPLe repo's IVLP: 2 + 2 tokens in 12 layers: 12*2*512 + 12*2*768
    assert count() == 12_288 + 18_432 == 30_720
    # PromptSRC's: 4 + 4 tokens in 9 layers: 9*4*512 + 9*4*768
    assert count(n_ctx_text=4, n_ctx_vision=4, prompt_depth_text=9, prompt_depth_vision=9) == 18_432 + 27_648


def test_save_reload_reproduces_logits_for_any_class_list(tmp_path, tiny_backbone, classnames):
    torch.manual_seed(1)
    learner = IVLP(tiny_backbone, classnames, prompt_depth_text=2, prompt_depth_vision=3)
    with torch.no_grad():
        for p in learner.learnable_tensors().values():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = learner(images=images).logits
    save_pretrained(learner, tmp_path / "ivlp")
    with torch.no_grad():
        after = from_pretrained(tmp_path / "ivlp", backbone=tiny_backbone)(images=images).logits
        subset = from_pretrained(tmp_path / "ivlp", classnames[3:], backbone=tiny_backbone)(images=images).logits
    assert torch.equal(before, after)
    assert (subset - before[:, 3:]).abs().max() < 1e-4


def test_options_and_refusals(tiny_backbone, classnames):
    assert IVLPConfig().to_dict() == {"n_ctx_text": 2, "n_ctx_vision": 2, "prompt_depth_text": 12,
                                      "prompt_depth_vision": 12, "ctx_init": "a photo of a"}
    with pytest.raises(ConfigError, match=r"prompt_depth_text=12 .* between 1 and 4 .*text tower has 4 layers"):
        IVLP(tiny_backbone, classnames)  # the paper's depth needs 12 layers; the tiny towers have 4
    with pytest.raises(ConfigError, match=r"prompt_depth_vision=5 .* between 1 and 4 .*vision tower has 4 layers"):
        IVLP(tiny_backbone, classnames, prompt_depth_text=2, prompt_depth_vision=5)
    # checks that need no backbone are made when the options are parsed
    with pytest.raises(ConfigError, match=r"prompt_depth_vision=0 .* at least 1"):
        IVLPConfig(prompt_depth_vision=0)
    with pytest.raises(ConfigError, match=r"ivlp.n_ctx_text='2' must be a whole number"):
        IVLPConfig.from_mapping({"n_ctx_text": "2"})
    with pytest.raises(ConfigError, match=r"ivlp has no option prompt_depth; valid options of ivlp: n_ctx_text"):
        IVLPConfig.from_mapping({"prompt_depth": 3})
    with pytest.raises(ConfigError, match="n_ctx_vision=0 .* at least 1"):
        IVLP(tiny_backbone, classnames, n_ctx_vision=0, prompt_depth_text=2, prompt_depth_vision=2)
    with pytest.raises(ConfigError, match="n_ctx_text=5 exceeds the 4 words"):
        IVLP(tiny_backbone, classnames, n_ctx_text=5, prompt_depth_text=2, prompt_depth_vision=2)
    random_init = IVLP(tiny_backbone, classnames, n_ctx_text=5, prompt_depth_text=2, prompt_depth_vision=2, ctx_init=None)
    assert random_init.ctx.shape == (5, 128)
    with pytest.raises(BackboneError, match="ModifiedResNet"):
        IVLP(meta_backbone("RN50"), classnames, prompt_depth_text=1, prompt_depth_vision=1)
