"""Deep prompts: run open_clip's own transformer blocks one by one, replacing prompt tokens between them.

MaPLe-style learners (methods.md §4) need token replacements inside the towers: text positions
1..M get a new learned prompt before each of the first J blocks, and the image tower carries
prompt tokens appended after its patch tokens. These functions drive open_clip's modules (the same
weights, embeddings and pooling) block by block instead of copying the model code.
"""

from __future__ import annotations

import torch
from torch import nn

from vlprompt.backbones.text_tower import TextTower
from vlprompt.errors import BackboneError


def check_vision_tower(visual: nn.Module) -> None:
    """Only open_clip's ViT with class-token pooling is supported (no ResNet: MaPLe needs tokens)."""
    kind = type(visual).__name__
    if kind != "VisionTransformer":
        raise BackboneError(f"deep vision prompts need a ViT image tower; this backbone has {kind} "
                            "(MaPLe does not support ResNet backbones such as RN50)")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise BackboneError("deep vision prompts support class-token pooling only (no attention pooling)")


def encode_text_deep(tower: TextTower, embeddings: torch.Tensor, eot: torch.Tensor,
                     deep_prompts: list[torch.Tensor]) -> torch.Tensor:
    """Text features where, before block j (1 <= j <= len(deep_prompts)), positions 1..M are replaced
    by ``deep_prompts[j-1]`` (M, W); truncated after the last end-of-text token like the plain path."""
    length = int(eot.max()) + 1
    x = embeddings[:, :length] + tower.positional_embedding[:length].to(embeddings.dtype)
    mask = tower.attn_mask[:length, :length]
    for j, block in enumerate(tower.transformer.resblocks):
        if 1 <= j <= len(deep_prompts):
            prompt = deep_prompts[j - 1].to(x.dtype)
            m = prompt.shape[0]
            x = torch.cat([x[:, :1], prompt.unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + m:]], dim=1)
        x = block(x, attn_mask=mask)
    x = tower.ln_final(x)
    return tower.project(x[torch.arange(x.shape[0], device=x.device), eot])


def encode_image_deep(visual: nn.Module, images: torch.Tensor, prompts: list[torch.Tensor]) -> torch.Tensor:
    """Image features with ``prompts[0]`` (N, W) appended after the patch tokens (after the positional
    embedding, before ln_pre) and ``prompts[j]`` replacing those N tokens before block j."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    n = prompts[0].shape[0] if prompts else 0
    if n:
        x = torch.cat([x, prompts[0].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    for j, block in enumerate(visual.transformer.resblocks):
        if 1 <= j < len(prompts):
            x = torch.cat([x[:, :-n], prompts[j].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
        x = block(x)
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled
