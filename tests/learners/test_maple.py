"""MaPLe: block-by-block deep prompts through open_clip's own modules (methods.md §4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlprompt.backbones import load_backbone
from vlprompt.backbones.deep_prompts import encode_image_deep, encode_text_deep
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.maple import MaPLe


def test_without_prompts_the_block_runner_equals_open_clip(tiny_backbone):
    images = torch.randn(3, 3, 64, 64)
    ids = tiny_backbone.tokenize(["a photo of a red circle.", "two blue stars"])
    with torch.no_grad():
        assert (encode_image_deep(tiny_backbone.visual, images, []) - tiny_backbone.model.encode_image(images)).abs().max() < 1e-5
        tower = tiny_backbone.text
        ours = encode_text_deep(tower, tower.embed(ids), tower.eot_positions(ids), [])
        assert (ours - tiny_backbone.model.encode_text(ids)).abs().max() < 1e-5


def test_shallow_word_init_reproduces_the_hand_crafted_sentence(tiny_backbone, classnames):
    learner = MaPLe(tiny_backbone, classnames, n_ctx=2, prompt_depth=1)
    with torch.no_grad():
        ours = learner.text_features()
        expected = F.normalize(tiny_backbone.model.encode_text(
            tiny_backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in classnames])), dim=-1)
    assert (ours - expected).abs().max() < 1e-5


def test_prompts_change_features_and_every_tensor_gets_gradients(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = MaPLe(tiny_backbone, classnames, n_ctx=2, prompt_depth=3)
    images = torch.randn(2, 3, 64, 64)
    out = learner(images=images)
    plain = F.normalize(tiny_backbone.encode_image(images), dim=-1)
    assert (out.image_features - plain).abs().max() > 1e-4
    F.cross_entropy(out.logits, torch.tensor([0, 1])).backward()
    for name, p in learner.learnable_tensors().items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_count_follows_the_formula(tiny_backbone, classnames):
    m, depth, wt, wv = 2, 4, tiny_backbone.text.width, tiny_backbone.visual.conv1.out_channels
    learner = MaPLe(tiny_backbone, classnames, n_ctx=m, prompt_depth=depth)
    weights = sum(p.numel() for n, p in learner.learnable_tensors().items() if not n.endswith("bias"))
    assert weights == m * wt + (depth - 1) * m * wt + depth * wt * wv  # §4, scaled to the tiny widths
    assert len(learner.learnable_tensors()) == 1 + (depth - 1) + 2 * depth


def test_save_reload_reproduces_logits(tmp_path, tiny_backbone, classnames):
    torch.manual_seed(1)
    learner = MaPLe(tiny_backbone, classnames, prompt_depth=2)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = learner(images=images).logits
    save_pretrained(learner, tmp_path / "maple")
    with torch.no_grad():
        after = from_pretrained(tmp_path / "maple", backbone=tiny_backbone)(images=images).logits
    assert torch.equal(before, after)


def test_refusals(tiny_backbone, classnames):
    with pytest.raises(ConfigError, match="prompt_depth"):
        MaPLe(tiny_backbone, classnames, prompt_depth=9)
    with pytest.raises(BackboneError, match="RN50"):
        MaPLe(load_backbone("RN50", None), classnames)
