"""load_backbone: open_clip names, local checkpoints in both formats, QuickGELU, identity, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import open_clip
import pytest
import torch

from vlprompt.backbones import TextTower, load_backbone
from vlprompt.errors import BackboneError


def test_identity_hashes_the_weights(tiny_backbone):
    same = load_backbone("vlprompt-tiny", None, seed=0)
    other = load_backbone("vlprompt-tiny", None, seed=1)
    assert same.identity == tiny_backbone.identity
    assert other.identity.sha256 != tiny_backbone.identity.sha256
    assert len(tiny_backbone.identity.sha256) == 64


def test_backbone_is_frozen_and_stays_in_eval_mode(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    tiny_backbone.train()
    assert not tiny_backbone.model.training


def test_open_clip_format_checkpoint_round_trips(tmp_path, tiny_backbone):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    loaded = load_backbone("vlprompt-tiny", str(path))
    assert loaded.identity.sha256 == tiny_backbone.identity.sha256
    assert loaded.identity.pretrained == str(path)


def test_openai_format_checkpoint_builds_quickgelu(tmp_path):
    """An OpenAI state dict (with its extra integer entries) gets QuickGELU, not open_clip's default GELU."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=64,
        vision_cfg=CLIPVisionCfg(layers=2, width=128, head_width=64, patch_size=16, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=2, layers=2),
        quick_gelu=True,
    ).eval()
    state = dict(model.state_dict())
    state.pop("logit_bias", None)
    state.update(input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path = tmp_path / "openai.pt"
    torch.save(state, path)
    backbone = load_backbone("ViT-B-32", str(path))
    acts = {type(m).__name__ for m in backbone.model.modules()}
    assert "QuickGELU" in acts and "GELU" not in acts
    ids = open_clip.get_tokenizer("ViT-B-32")(["a red circle"])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone.model.encode_text(ids), model.encode_text(ids), atol=1e-5)
        assert torch.allclose(backbone.encode_image(images), model.encode_image(images), atol=1e-5)


def test_custom_text_clip_tower_is_adapted(tiny_backbone):
    model = open_clip.create_model("vlprompt-tiny", force_custom_text=True)
    assert type(model).__name__ == "CustomTextCLIP"
    tower = TextTower(model)
    ids = open_clip.get_tokenizer("vlprompt-tiny")(["a photo of a red circle.", "stripes"])
    with torch.no_grad():
        ours = tower(tower.embed(ids), tower.eot_positions(ids))
        ref = model.encode_text(ids)
    assert (ours - ref).abs().max() < 1e-5


def test_bidirectional_text_tower_is_refused():
    model = open_clip.create_model("vlprompt-tiny", force_custom_text=True)
    model.text.attn_mask = None
    with pytest.raises(BackboneError, match="causal"):
        TextTower(model)


def test_unknown_name_and_tag_give_clear_errors(tmp_path):
    with pytest.raises(BackboneError, match="vlprompt list backbones"):
        load_backbone("ViT-Q-99")
    with pytest.raises(BackboneError, match="known tags"):
        load_backbone("ViT-B-32", "no-such-tag")
    with pytest.raises(BackboneError, match="not found"):
        load_backbone("vlprompt-tiny", str(tmp_path / "missing.safetensors"))


def test_offline_download_error_says_what_to_pass_instead():
    code = (
        "from vlprompt.backbones import load_backbone\n"
        "from vlprompt.errors import BackboneError\n"
        "try:\n    load_backbone('RN50', 'openai')\nexcept BackboneError as e:\n    print('ERR', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=os.path.join(os.getcwd(), ".no-hf-cache"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "ERR" in out.stdout, out.stderr[-2000:]
    assert "pretrained=/path/to/weights.pt" in out.stdout and "vlprompt-tiny" in out.stdout
