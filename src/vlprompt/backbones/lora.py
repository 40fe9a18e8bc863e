"""Low-rank updates of the towers' attention projections (LoRA, as CLIP-LoRA applies it).

For a frozen projection W (out, in) with bias b, the updated projection of an input x is

    y = W x + b + s * B A dropout(x),    s = alpha / sqrt(r),

with A (r, in) and B (out, r) trained, A drawn as nn.Linear's default (Kaiming-uniform, a = sqrt(5))
and B zero, so an untrained update leaves the tower's output unchanged. Dropout acts on the update's
input only, in training mode only. The scale alpha / sqrt(r) is CLIP-LoRA's (its ``LoRALayer``), not
the LoRA paper's alpha / r.

The frozen backbone is never modified: the updates live in modules the learner owns, and the towers
run block by block (``deep_prompts``) with each updated block's attention computed here from the
block's own frozen weights plus the updates. Blocks without an update run as open_clip runs them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones.deep_prompts import encode_image_blocks, encode_text_blocks
from vlprompt.backbones.fast_text import is_plain_block
from vlprompt.backbones.text_tower import TextTower
from vlprompt.errors import BackboneError, ConfigError

#: the attention projections an update can target: query, key, value and output
PROJECTIONS = ("q", "k", "v", "o")
#: named layer sets, as fractions of a tower's depth; on 12 layers they are CLIP-LoRA's index lists
#: (``INDEX_POSITIONS_TEXT``: bottom 0-3, mid 4-7, up 8-11, half-bottom 0-5, half-up 6-11, top3 9-11)
POSITIONS = ("all", "bottom", "mid", "up", "half-bottom", "half-up", "top1", "top2", "top3")


def layer_indices(position: str | list[int], depth: int, tower: str) -> list[int]:
    """The 0-based blocks of a ``depth``-block tower that ``position`` names (or lists)."""
    if isinstance(position, list):
        bad = [i for i in position if not 0 <= i < depth]
        if bad:
            raise ConfigError(f"position {position} names blocks {bad} that the {depth}-block {tower} tower lacks; "
                              f"use indices 0 to {depth - 1}")
        return sorted(set(position))
    third, half = depth // 3, depth // 2
    spans = {"all": (0, depth), "bottom": (0, third), "mid": (third, 2 * third), "up": (2 * third, depth),
             "half-bottom": (0, half), "half-up": (half, depth), "top1": (depth - 1, depth),
             "top2": (depth - 2, depth), "top3": (depth - 3, depth)}
    start, stop = spans[position]
    if start < 0 or stop <= start:
        raise ConfigError(f"position {position!r} selects no block of the {depth}-block {tower} tower; "
                          "list the block indices instead")
    return list(range(start, stop))


class LowRankUpdate(nn.Module):
    """s * B A dropout(x) for one projection of width ``in_features`` -> ``out_features``; A and B are
    bias-free linear layers (``lora_A.weight`` (r, in), ``lora_B.weight`` (out, r)), as PEFT holds them."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float):
        super().__init__()
        # drawn on the CPU (the same values on every device): A as nn.Linear's default, B zero
        self.lora_A = nn.Linear(in_features, rank, bias=False, device="cpu")
        self.lora_B = nn.Linear(rank, out_features, bias=False, device="cpu")
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / math.sqrt(rank)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # learned tensors stay fp32; the update runs in the towers' precision (the gradient reaches fp32)
        x = self.dropout(x)
        a, b = self.lora_A.weight.to(x.dtype), (self.scaling * self.lora_B.weight).to(x.dtype)
        return F.linear(F.linear(x, a), b)


class AttentionUpdate(nn.Module):
    """Updates of some of one attention module's projections; computes that module's self-attention."""

    def __init__(self, attn: nn.MultiheadAttention, params: list[str], rank: int, alpha: float, dropout: float):
        super().__init__()
        width = attn.embed_dim
        self.updates = nn.ModuleDict({p: LowRankUpdate(width, width, rank, alpha, dropout) for p in params})

    def _update(self, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y + self.updates[name](x) if name in self.updates else y

    def forward(self, attn: nn.MultiheadAttention, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """``attn(x, x, x, attn_mask=attn_mask)[0]`` with the updated projections (x is (B, L, W))."""
        b, length, width = x.shape
        heads = attn.num_heads
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = self._update("q", x, q), self._update("k", x, k), self._update("v", x, v)

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, L, W) -> (B, heads, L, W / heads)
            return t.reshape(b, length, heads, width // heads).transpose(1, 2)

        mask = attn_mask.to(q.dtype) if attn_mask is not None else None
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        out = out.transpose(1, 2).reshape(b, length, width)
        return self._update("o", out, F.linear(out, attn.out_proj.weight, attn.out_proj.bias))


class TowerUpdates(nn.Module):
    """Attention updates of some blocks of one tower (a ``transformer`` with ``resblocks``)."""

    def __init__(self, transformer: nn.Module, tower: str, layers: list[int], params: list[str], rank: int,
                 alpha: float, dropout: float):
        super().__init__()
        blocks = transformer.resblocks
        for j in layers:
            if not is_plain_block(blocks[j]):
                raise BackboneError(f"block {j} of the {tower} tower is {type(blocks[j]).__name__} with "
                                    f"{type(getattr(blocks[j], 'attn', None)).__name__} attention; low-rank updates "
                                    "need open_clip's plain ResidualAttentionBlock with nn.MultiheadAttention")
        self.blocks = nn.ModuleDict({str(j): AttentionUpdate(blocks[j].attn, params, rank, alpha, dropout)
                                     for j in layers})

    def run(self, j: int, block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Block ``j`` on ``x``: open_clip's ``ResidualAttentionBlock.forward`` with the updated attention."""
        update = self.blocks[str(j)] if str(j) in self.blocks else None
        if update is None:
            return block(x, attn_mask=attn_mask)
        x = x + block.ls_1(update(block.attn, block.ln_1(x), attn_mask))
        return x + block.ls_2(block.mlp(block.ln_2(x)))


def image_tower_updates(visual: nn.Module, position: str | list[int], params: list[str], rank: int, alpha: float,
                        dropout: float) -> TowerUpdates:
    """Updates of a ViT image tower; other towers are refused (a ResNet's only attention is its pooling)."""
    kind = type(visual).__name__
    if kind != "VisionTransformer":
        raise BackboneError(f"low-rank updates of the image tower need open_clip's ViT; this backbone has {kind} "
                            "(a ResNet's only attention is its pooling layer, and CLIP-LoRA's code supports ViTs "
                            "only). Use encoder='text' to update the text tower alone, or a ViT such as ViT-B-16")
    layers = layer_indices(position, len(visual.transformer.resblocks), "image")
    return TowerUpdates(visual.transformer, "image", layers, params, rank, alpha, dropout)


def text_tower_updates(tower: TextTower, position: str | list[int], params: list[str], rank: int, alpha: float,
                       dropout: float) -> TowerUpdates:
    layers = layer_indices(position, len(tower.transformer.resblocks), "text")
    return TowerUpdates(tower.transformer, "text", layers, params, rank, alpha, dropout)


def encode_image_updated(visual: nn.Module, images: torch.Tensor, updates: TowerUpdates) -> torch.Tensor:
    """Unnormalised image features of the ViT with its attention updated."""
    return encode_image_blocks(visual, images, run=updates.run)


def encode_text_updated(tower: TextTower, embeddings: torch.Tensor, eot: torch.Tensor,
                        updates: TowerUpdates) -> torch.Tensor:
    """Unnormalised text features of token embeddings (N, L, W) with the text tower's attention updated."""
    return encode_text_blocks(tower, embeddings, eot, run=updates.run)
