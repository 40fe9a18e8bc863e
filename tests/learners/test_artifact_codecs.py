"""Artifact codecs are a registry: a codec registered here, outside vlprompt, saves and reloads a prompt,
and a codec nobody registered is refused naming the artifact's config.json and the codecs that are known."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import vlprompt.regularizers  # noqa: F401  (registers the built-in codec, so the known list is not empty)
from vlprompt.errors import ArtifactError
from vlprompt.learners.artifact import ARTIFACT_CODECS, CONFIG_FILE, from_pretrained, save_pretrained
from vlprompt.learners.coop import CoOp

CODEC = "test-fixed-point"
STEP = 1 / 64  # values are stored as int16 multiples of STEP


class FixedPoint(nn.Module):
    """A parametrization the model sees as multiples of 1/64, written as int16 counts with a shape header."""

    artifact_codec = CODEC

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.round(w / STEP) * STEP

    def encode(self, w: torch.Tensor) -> bytes:
        counts = torch.round(w / STEP).to(torch.int16).flatten().tolist()
        return struct.pack(f"<B{w.dim()}I{len(counts)}h", w.dim(), *w.shape, *counts)


def decode_fixed_point(data: bytes) -> torch.Tensor:
    ndim = data[0]
    shape = struct.unpack_from(f"<{ndim}I", data, 1)
    counts = struct.unpack_from(f"<{len(data[1 + 4 * ndim:]) // 2}h", data, 1 + 4 * ndim)
    return torch.tensor(counts, dtype=torch.float32).reshape(shape) * STEP


@pytest.fixture
def fixed_point_codec():
    ARTIFACT_CODECS.register(CODEC)(decode_fixed_point)
    yield
    ARTIFACT_CODECS.unregister(CODEC)


def _fixed_point_coop(backbone, classnames) -> CoOp:
    torch.manual_seed(0)
    learner = CoOp(backbone, classnames, n_ctx=3)
    parametrize.register_parametrization(learner, "ctx", FixedPoint())
    return learner


def test_a_codec_registered_outside_vlprompt_round_trips_an_artifact(tmp_path, tiny_backbone, classnames,
                                                                      fixed_point_codec):
    learner = _fixed_point_coop(tiny_backbone, classnames)
    prompt = save_pretrained(learner, tmp_path / "prompt")
    config = json.loads((prompt / CONFIG_FILE).read_text())
    assert config["encoded"]["ctx"]["codec"] == CODEC and "ctx" not in config["tensors"]
    assert (prompt / f"ctx.{CODEC}").stat().st_size == 1 + 4 * 2 + 2 * learner.ctx.numel()
    reloaded = from_pretrained(prompt, backbone=tiny_backbone)
    assert not parametrize.is_parametrized(reloaded)  # a plain learner holding the decoded values
    assert torch.equal(reloaded.ctx, learner.ctx)
    assert not torch.equal(learner.ctx, learner.parametrizations.ctx.original)  # the codec did change the values
    with torch.no_grad():
        assert torch.equal(reloaded.text_features(), learner.text_features())


def test_an_unknown_codec_is_refused_naming_the_file_and_the_known_codecs(tmp_path, tiny_backbone, classnames,
                                                                          fixed_point_codec):
    prompt = save_pretrained(_fixed_point_coop(tiny_backbone, classnames), tmp_path / "prompt")
    ARTIFACT_CODECS.unregister(CODEC)  # a vlprompt without the plugin that wrote the artifact
    try:
        with pytest.raises(ArtifactError) as refused:
            from_pretrained(prompt, backbone=tiny_backbone)
    finally:
        ARTIFACT_CODECS.register(CODEC)(decode_fixed_point)
    message = str(refused.value)
    assert str(prompt / CONFIG_FILE) in message
    assert f"artifact codec {CODEC!r}, which this vlprompt does not know" in message
    assert "(known: qprompt-packed)" in message  # every registered codec, here the built-in one


def test_saving_with_an_unregistered_codec_is_refused_before_writing(tmp_path, tiny_backbone, classnames):
    learner = _fixed_point_coop(tiny_backbone, classnames)
    with pytest.raises(ArtifactError, match=f"artifact codec {CODEC!r}, which is not registered"):
        save_pretrained(learner, tmp_path / "prompt")
    assert not (tmp_path / "prompt").exists()
