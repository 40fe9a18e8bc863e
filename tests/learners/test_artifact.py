"""Prompt artifacts: exact reload, any class list, no pickles, refusal of a different backbone."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from vlprompt.backbones import load_backbone
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.learners.artifact import (
    CONFIG_DIGEST,
    CONFIG_FILE,
    TENSORS_FILE,
    config_digest,
    from_pretrained,
    save_pretrained,
)
from vlprompt.learners.cocoop import CoCoOp
from vlprompt.learners.coop import CoOp

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


@pytest.mark.parametrize("cls", [CoOp, CoCoOp, partial(CoOp, ctx_init_template="a type of pet, a photo of a {}.")])
def test_save_and_reload_reproduces_logits_exactly(tmp_path, tiny_backbone, classnames, cls):
    torch.manual_seed(0)
    learner = cls(tiny_backbone, classnames)
    with torch.no_grad():
        for p in learner.learnable_tensors().values():
            p.add_(torch.randn_like(p) * 0.1)
    feats = torch.randn(4, tiny_backbone.embed_dim)
    with torch.no_grad():
        before = learner(features=feats).logits
    save_pretrained(learner, tmp_path / "prompt")
    reloaded = from_pretrained(tmp_path / "prompt", backbone=tiny_backbone)
    with torch.no_grad():
        after = reloaded(features=feats).logits
    assert torch.equal(before, after)
    config = json.loads((tmp_path / "prompt" / "config.json").read_text())
    assert config["backbone"]["sha256"] == tiny_backbone.identity.sha256
    assert set(config["tensors"]) == set(learner.learnable_tensors())


def test_artifact_holds_no_pickle_and_no_class_buffers(tmp_path, tiny_backbone, classnames):
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    save_pretrained(learner, tmp_path / "prompt")
    files = sorted(p.name for p in (tmp_path / "prompt").iterdir())
    assert files == ["config.json", TENSORS_FILE]
    for path in (tmp_path / "prompt").iterdir():
        assert not path.read_bytes().startswith(PICKLE_MAGIC)
    from safetensors.torch import load_file

    assert list(load_file(str(tmp_path / "prompt" / TENSORS_FILE))) == ["ctx"]


def test_reload_for_other_classes_matches_a_fresh_learner_with_that_context(tmp_path, tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=4)
    save_pretrained(learner, tmp_path / "prompt")
    others = ["orange spiral", "cyan cross"]
    reloaded = from_pretrained(tmp_path / "prompt", classnames=others, backbone=tiny_backbone)
    direct = CoOp(tiny_backbone, others, n_ctx=4)
    with torch.no_grad():
        direct.ctx.copy_(learner.ctx)
        assert torch.equal(reloaded.text_features(), direct.text_features())


def test_wrong_backbone_is_refused_with_both_identities(tmp_path, tiny_backbone, classnames):
    save_pretrained(CoOp(tiny_backbone, classnames, n_ctx=2), tmp_path / "prompt")
    other = load_backbone("vlprompt-tiny", None, seed=5)
    with pytest.raises(BackboneError, match="trained on vlprompt-tiny") as err:
        from_pretrained(tmp_path / "prompt", backbone=other)
    assert other.identity.sha256[:12] in str(err.value)


def test_missing_artifact_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config.json not found"):
        from_pretrained(tmp_path / "nothing-here")


def test_a_prompt_saved_before_the_n_ctx_rule_still_loads(tmp_path, tiny_backbone, classnames):
    """Older vlprompt saved the given n_ctx (16) beside an init phrase that overrode it; the phrase trained."""
    learner = CoOp(tiny_backbone, classnames, ctx_init="a photo of a")
    prompt = save_pretrained(learner, tmp_path / "prompt")
    config = json.loads((prompt / CONFIG_FILE).read_text())
    config["options"]["n_ctx"] = 16  # what such a prompt recorded
    config[CONFIG_DIGEST] = config_digest(config)
    (prompt / CONFIG_FILE).write_text(json.dumps(config))
    loaded = from_pretrained(prompt)
    assert loaded.n_ctx == 4 and torch.equal(loaded.ctx, learner.ctx)
    with pytest.raises(ConfigError, match="coop.n_ctx=16 conflicts with coop.ctx_init"):
        CoOp(tiny_backbone, classnames, ctx_init="a photo of a", n_ctx=16)  # a user's conflicting choice is refused
