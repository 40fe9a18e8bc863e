"""Class-chunked, checkpointed text encoding (train.text_chunk) gives the features and gradients of one
pass, for the prompt layouts that cannot share a prefix; the automatic choice follows its estimate."""

from __future__ import annotations

import pytest
import torch

from vlprompt.engine.memory import FLOATS_PER_TOKEN_LAYER, choose_text_chunk, text_activation_bytes
from vlprompt.errors import ConfigError
from vlprompt.learners.coop import CoOp
from vlprompt.learners.ivlp import IVLP
from vlprompt.learners.maple import MaPLe

NAMES = [f"thing number {i}" for i in range(23)]


@pytest.mark.parametrize("make", [
    lambda b: CoOp(b, NAMES, n_ctx=4, csc=True),
    lambda b: CoOp(b, NAMES, n_ctx=4, class_token_position="middle"),
    lambda b: CoOp(b, NAMES, n_ctx=4, class_token_position="front"),
    lambda b: MaPLe(b, NAMES, prompt_depth=3),
    lambda b: IVLP(b, NAMES, prompt_depth_text=3, prompt_depth_vision=3),
], ids=["csc", "middle", "front", "maple", "ivlp"])
def test_chunked_encoding_equals_one_pass(tiny_backbone, make):
    torch.manual_seed(0)
    learner = make(tiny_backbone)
    weights = torch.randn(len(NAMES), tiny_backbone.embed_dim)
    tensors = list(learner.learnable_tensors().values())
    results = {}
    for chunk in (None, 5):
        learner.text_chunk = chunk
        features = learner.text_features()
        results[chunk] = (features.detach(), torch.autograd.grad((features * weights).sum(), tensors,
                                                                 allow_unused=True))
    assert (results[None][0] - results[5][0]).abs().max() < 1e-6
    for one, chunked in zip(results[None][1], results[5][1]):
        if one is not None:
            assert (one - chunked).abs().max() <= 1e-5 * one.abs().max()


def test_auto_chunks_only_above_the_budget(tiny_backbone):
    tower = tiny_backbone.text
    per_class = 10 * len(tower.transformer.resblocks) * (
        FLOATS_PER_TOKEN_LAYER * tower.width + tower.transformer.resblocks[0].attn.num_heads * 10) * 4
    assert text_activation_bytes(tiny_backbone, 1000, 10) == 1000 * per_class
    budget_gb = 100 * per_class / 2**30  # room for exactly 100 classes
    assert choose_text_chunk("auto", tiny_backbone, 100, 10, budget_gb) is None
    assert choose_text_chunk("auto", tiny_backbone, 1000, 10, budget_gb) == 100
    assert choose_text_chunk(0, tiny_backbone, 1000, 10, budget_gb) is None
    assert choose_text_chunk(64, tiny_backbone, 1000, 10, budget_gb) == 64
    with pytest.raises(ConfigError, match="train.text_chunk=-1"):
        choose_text_chunk(-1, tiny_backbone, 10, 10, 1.0)
