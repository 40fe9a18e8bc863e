"""MaPLe: deep prompts through open_clip's own blocks (methods.md §4).

The equivalence tests use open_clip itself as the oracle: its encoders, and the hidden states its
blocks receive (read with forward pre-hooks, independently of the block runner under test).
"""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from vlprompt.backbones import Backbone, BackboneIdentity
from vlprompt.backbones.deep_prompts import encode_image_blocks, encode_text_blocks
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.maple import MaPLe, MaPLeConfig

SMALL_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3}


def small_backbone(vision_cfg: dict) -> Backbone:
    """A random open_clip CLIP with a 64-wide, 3-layer text tower and the given image tower."""
    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=32, vision_cfg=vision_cfg, text_cfg=SMALL_TEXT)
    preprocess = {"image_size": 32, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    return Backbone(model, open_clip.get_tokenizer("vlprompt-tiny"), preprocess,
                    BackboneIdentity("small-test", "random", "0" * 64))


def block_inputs(blocks) -> tuple[list[torch.Tensor], list]:
    """Record the tokens each of open_clip's blocks receives; returns (record, hook handles)."""
    seen: list[torch.Tensor] = []
    handles = [b.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone())) for b in blocks]
    return seen, handles


def test_without_prompts_the_block_runner_equals_open_clip(tiny_backbone):
    images = torch.randn(2, 3, 64, 64)
    ids = tiny_backbone.tokenize(["a photo of a red circle.", "two blue stars"])
    tower, calls = tiny_backbone.text, []

    def identity(j, x):
        calls.append(j)
        return x

    with torch.no_grad():
        image = encode_image_blocks(tiny_backbone.visual, images, hook=identity)
        text = encode_text_blocks(tower, tower.embed(ids), tower.eot_positions(ids), identity)
        assert (image - tiny_backbone.model.encode_image(images)).abs().max() < 1e-5
        assert (text - tiny_backbone.model.encode_text(ids)).abs().max() < 1e-5
    assert calls == [0, 1, 2, 3] * 2  # the hook sees every block of both towers


def test_shallow_word_init_reproduces_the_hand_crafted_sentence(tiny_backbone, classnames):
    learner = MaPLe(tiny_backbone, classnames, n_ctx=2, prompt_depth=1)
    with torch.no_grad():
        ours = learner.text_features()
        expected = tiny_backbone.model.encode_text(
            tiny_backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in classnames]))
    assert (ours - F.normalize(expected, dim=-1)).abs().max() < 1e-5


def test_deep_text_prompts_replace_positions_1_to_m_before_each_block(tiny_backbone, classnames):
    """Deep prompts equal to the hidden states open_clip gives "a photo" at those blocks change nothing."""
    learner = MaPLe(tiny_backbone, classnames, n_ctx=2, prompt_depth=4)
    sentences = tiny_backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in classnames])
    seen, handles = block_inputs(tiny_backbone.text.transformer.resblocks)
    with torch.no_grad():
        expected = F.normalize(tiny_backbone.model.encode_text(sentences), dim=-1)
    for h in handles:
        h.remove()
    with torch.no_grad():
        for j in (1, 2, 3):
            learner.deep_text[str(j)].copy_(seen[j][0, 1:3])  # causal: positions 1..2 are the same in every row
        assert (learner.text_features() - expected).abs().max() < 1e-5
        learner.deep_text["2"].add_(0.1 * torch.randn(2, 128))  # (a constant shift would vanish in LayerNorm)
        assert (learner.text_features() - expected).abs().max() > 1e-3


def test_vision_prompts_are_appended_before_ln_pre_and_replaced_before_each_block(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = MaPLe(tiny_backbone, classnames, n_ctx=2, prompt_depth=3)
    visual, image = tiny_backbone.visual, torch.randn(1, 3, 64, 64)
    seen, handles = block_inputs(visual.transformer.resblocks)
    with torch.no_grad():
        shallow_prompt = learner.vision_prompts()[0]
        shallow = encode_image_blocks(visual, image, shallow_prompt)
        for h in handles:
            h.remove()
        # block 0 receives open_clip's own tokens (class, patches; through ln_pre) followed by ln_pre(F_0(P_0))
        expected_input = torch.cat([visual._embeds(image), visual.ln_pre(shallow_prompt).unsqueeze(0)], dim=1)
        assert (seen[0] - expected_input).abs().max() < 1e-5
        # make F_j(P_j) equal to the prompt tokens the shallow run carries into block j: nothing changes
        for j in (1, 2):
            learner.deep_text[str(j)].zero_()[:, :2].copy_(torch.eye(2))
            proj = learner.projections[j]
            proj.weight.zero_()[:, :2].copy_(seen[j][0, -2:].t())
            proj.bias.zero_()
        assert (learner.encode_images(image) - shallow).abs().max() < 1e-5
        learner.projections[1].bias.add_(torch.randn(128))  # (a constant shift would vanish in LayerNorm)
        assert (learner.encode_images(image) - shallow).abs().max() > 1e-4


def test_prompts_change_image_features_and_every_tensor_gets_gradients(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = MaPLe(tiny_backbone, classnames, n_ctx=2, prompt_depth=3)
    images = torch.randn(2, 3, 64, 64)
    out = learner(images=images)
    plain = F.normalize(tiny_backbone.encode_image(images), dim=-1)
    assert (out.image_features - plain).abs().max() > 1e-3
    F.cross_entropy(out.logits, torch.tensor([0, 1])).backward()
    tensors = learner.learnable_tensors()
    assert sorted(tensors) == sorted(["ctx", "deep_text.1", "deep_text.2"]
                                     + [f"projections.{j}.{p}" for j in range(3) for p in ("weight", "bias")])
    for name, p in tensors.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in tiny_backbone.parameters())


def test_parameter_count_follows_the_formula(tiny_backbone, classnames):
    """§4: M*Wt (P_0) + (J-1)*M*Wt (deep prompts) + J*Wt*Wv (projections), biases J*Wv on top."""

    def counts(learner):
        tensors = learner.learnable_tensors().items()
        return (sum(p.numel() for n, p in tensors if not n.endswith("bias")),
                sum(p.numel() for n, p in tensors if n.endswith("bias")))

    # tiny: M=2, J=4, Wt=Wv=128: 256 + 3*256 + 4*16384 = 66,560; biases 4*128
    assert counts(MaPLe(tiny_backbone, classnames, n_ctx=2, prompt_depth=4)) == (66_560, 512)
    # text 64 wide, image 96 wide, M=2, J=2: 128 + 128 + 2*64*96 = 12,544; biases 2*96
    narrow = small_backbone({"image_size": 32, "patch_size": 16, "width": 96, "layers": 2, "head_width": 32})
    learner = MaPLe(narrow, classnames[:2], n_ctx=2, prompt_depth=2)
    assert counts(learner) == (12_544, 192)
    assert learner(images=torch.randn(1, 3, 32, 32)).logits.shape == (1, 2)


def test_deep_projections_start_as_copies_of_one_layer(tiny_backbone, classnames):
    learner = MaPLe(tiny_backbone, classnames, prompt_depth=4)
    first, *deep = learner.projections
    assert all(torch.equal(p.weight, deep[0].weight) and torch.equal(p.bias, deep[0].bias) for p in deep)
    assert not torch.equal(first.weight, deep[0].weight)
    assert deep[0].weight is not deep[1].weight


def test_save_reload_reproduces_logits_for_any_class_list(tmp_path, tiny_backbone, classnames):
    torch.manual_seed(1)
    learner = MaPLe(tiny_backbone, classnames, prompt_depth=2)
    with torch.no_grad():
        for p in learner.learnable_tensors().values():
            p.add_(0.05 * torch.randn_like(p))  # as if trained
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = learner(images=images).logits
    save_pretrained(learner, tmp_path / "maple")
    with torch.no_grad():
        after = from_pretrained(tmp_path / "maple", backbone=tiny_backbone)(images=images).logits
        subset = from_pretrained(tmp_path / "maple", classnames[3:], backbone=tiny_backbone)(images=images).logits
    assert torch.equal(before, after)
    assert (subset - before[:, 3:]).abs().max() < 1e-4


def test_options_and_refusals(tiny_backbone, classnames):
    assert MaPLeConfig().to_dict() == {"n_ctx": 2, "prompt_depth": 9, "ctx_init": "a photo of a"}
    with pytest.raises(ConfigError, match=r"prompt_depth=9 .* between 1 and 4"):
        MaPLe(tiny_backbone, classnames)  # the paper's depth needs 9 layers; the tiny towers have 4
    with pytest.raises(ConfigError, match="prompt_depth=0"):
        MaPLe(tiny_backbone, classnames, prompt_depth=0)
    with pytest.raises(ConfigError, match="n_ctx=5 exceeds the 4 words"):
        MaPLe(tiny_backbone, classnames, n_ctx=5, prompt_depth=2)
    assert MaPLe(tiny_backbone, classnames, n_ctx=5, prompt_depth=2, ctx_init=None).ctx.shape == (5, 128)
    shallow_vision = small_backbone({"image_size": 32, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32})
    with pytest.raises(ConfigError, match="between 1 and 2 .*text tower has 3 layers, its image tower 2"):
        MaPLe(shallow_vision, classnames, prompt_depth=3)
    resnet = small_backbone({"image_size": 64, "layers": [1, 1, 1, 1], "width": 16})
    with pytest.raises(BackboneError, match="ModifiedResNet.*RN50"):
        MaPLe(resnet, classnames, prompt_depth=1)
    avg_pool = small_backbone({"image_size": 32, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32,
                               "pool_type": "avg"})
    with pytest.raises(BackboneError, match="class-token pooling.*'avg'"):
        MaPLe(avg_pool, classnames, prompt_depth=1)
