"""Exact shared-prefix text encoding for prompts that start with the same tokens for every class.

With a unified context and the class token at the end, every class prompt begins with the same
start-of-text token and M context vectors. Under the causal mask those positions never see what
follows, so their hidden states are identical for all classes at every layer: they are computed
once, and each class then runs only its own remaining tokens (up to its end-of-text token, which
is where features are pooled), attending to the shared prefix's keys and values. Classes are
grouped by suffix length, so nothing is padded. Gradients flow into the prefix (the context).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones.text_tower import TextTower


def supports_shared_prefix(tower: TextTower) -> bool:
    """True when every block is open_clip's plain pre-norm block with a standard attention module."""
    for block in tower.transformer.resblocks:
        attn = getattr(block, "attn", None)
        if type(block).__name__ != "ResidualAttentionBlock" or hasattr(block, "ln_1_kv"):
            return False
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or not attn.batch_first:
            return False
    return True


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, L, W) -> (B, heads, L, W / heads)."""
    b, length, width = x.shape
    return x.view(b, length, n_heads, width // n_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


def _block(block: nn.Module, prefix: torch.Tensor, groups: list[torch.Tensor], masks: list[torch.Tensor]):
    """One residual block on the shared prefix (1, P, W) and each suffix group (K_g, L_g, W)."""
    attn: nn.MultiheadAttention = block.attn
    h = attn.num_heads

    def qkv(x):
        q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        return _heads(q, h), _heads(k, h), _heads(v, h)

    def finish(x, attended):
        x = x + block.ls_1(attn.out_proj(_merge(attended)))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    qp, kp, vp = qkv(prefix)
    new_groups = []
    for x, mask in zip(groups, masks):
        q, k, v = qkv(x)
        n = x.shape[0]
        keys = torch.cat([kp.expand(n, -1, -1, -1), k], dim=2)
        values = torch.cat([vp.expand(n, -1, -1, -1), v], dim=2)
        new_groups.append(finish(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)))
    new_prefix = finish(prefix, F.scaled_dot_product_attention(qp, kp, vp, is_causal=True))
    return new_prefix, new_groups


def encode_shared_prefix(tower: TextTower, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """Features equal to ``tower(cat([prefix expanded to K rows, suffix], 1), eot)``.

    prefix (P, W) is shared by all K classes; suffix (K, S, W) holds each class's remaining token
    embeddings; eot (K,) indexes the end-of-text token in the full sequence (eot >= P).
    """
    p = prefix.shape[0]
    pos = tower.positional_embedding.to(prefix.dtype)
    lengths = (eot - p + 1).tolist()
    groups, masks, members = [], [], []
    for length in sorted(set(lengths)):
        idx = [i for i, n in enumerate(lengths) if n == length]
        members.append(idx)
        groups.append(suffix[idx, :length] + pos[p : p + length])
        rows = torch.arange(length, device=prefix.device).unsqueeze(1)
        cols = torch.arange(p + length, device=prefix.device).unsqueeze(0)
        masks.append((cols < p) | (cols - p <= rows))  # all of the prefix, and causal within the suffix
    x = (prefix + pos[:p]).unsqueeze(0)
    for block in tower.transformer.resblocks:
        x, groups = _block(block, x, groups, masks)
    last = torch.cat([g[:, -1] for g in groups])  # each class's end-of-text state, in group order
    grouped_order = torch.tensor([i for idx in members for i in idx], device=prefix.device)
    return tower.project(tower.ln_final(last[torch.argsort(grouped_order)]))
