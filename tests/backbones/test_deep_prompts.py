"""What backbones offers learners for prompts inside the towers: the towers' sizes, and deep prompts that
may only enter the blocks after the first (block 0 takes the shallow prompts)."""

from __future__ import annotations

import pytest
import torch

from vlprompt.backbones.deep_prompts import encode_image_blocks, encode_image_deep, encode_text_deep, token_vit_size
from vlprompt.errors import BackboneError


def test_tower_sizes_are_the_blocks_a_hook_sees(tiny_backbone):
    seen = []

    def count(j, x):
        seen.append(j)
        return x

    with torch.no_grad():
        encode_image_blocks(tiny_backbone.visual, torch.randn(1, 3, 64, 64), hook=count)
    blocks, width = token_vit_size(tiny_backbone.visual)
    assert (blocks, tiny_backbone.text.depth) == (len(seen), 4)
    assert width == tiny_backbone.visual.conv1.out_channels


@pytest.mark.parametrize("block", [0, 4])
def test_deep_prompts_outside_blocks_1_to_last_are_refused(tiny_backbone, block):
    ids = tiny_backbone.tokenize(["a photo of a cat."])
    tower, width = tiny_backbone.text, token_vit_size(tiny_backbone.visual)[1]
    with pytest.raises(BackboneError, match=rf"deep text prompts before block\(s\) \[{block}\].*blocks 1 to 3"):
        encode_text_deep(tower, tower.embed(ids), tower.eot_positions(ids), {block: torch.zeros(2, tower.width)})
    with pytest.raises(BackboneError, match=rf"deep image prompts before block\(s\) \[{block}\].*blocks 1 to 3"):
        encode_image_deep(tiny_backbone.visual, torch.randn(1, 3, 64, 64), torch.zeros(2, width),
                          {block: torch.zeros(2, width)})
