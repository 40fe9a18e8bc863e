"""Exact shared-prefix text encoding for prompts that start with the same tokens for every class.

With a unified context and the class token at the end, every class prompt begins with the same
start-of-text token and M context vectors. Under the causal mask those positions never see what
follows, so their hidden states are identical for all classes at every layer: they are computed
once, and each class runs only its own remaining tokens up to its end-of-text token (where the
features are pooled), attending to the prefix's keys and values. Gradients flow into the prefix.

The tokens are packed: the prefix and every class's valid suffix tokens form one (T, W) sequence,
classes sorted by suffix length, so the per-token layers (norms, projections, MLP: nearly all the
FLOPs) run as single large matrix products with no padding. Only attention needs the class
structure: classes of equal suffix length are contiguous in the packing and are attended as one
batch each, with a mask that lets every suffix token see the whole prefix and the causally earlier
tokens of its own class.

Several prefixes (one per image, as CoCoOp's image-conditioned contexts) share the class suffixes:
the packed sequences then carry a leading batch dimension and every layer runs over all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones.text_tower import TextTower
from vlprompt.errors import ConfigError


def is_plain_block(block: nn.Module) -> bool:
    """True for open_clip's plain pre-norm block with a standard batch-first self-attention module: the
    block whose arithmetic the fast text path and the low-rank attention updates re-implement.

    Anything else (custom blocks, cross attention, extra key/value biases, attention dropout) is not.
    """
    attn = getattr(block, "attn", None)
    if type(block).__name__ != "ResidualAttentionBlock" or hasattr(block, "ln_1_kv"):
        return False
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim or not attn.batch_first:
        return False
    return attn.bias_k is None and not attn.add_zero_attn and attn.dropout == 0.0


def supports_shared_prefix(tower: TextTower) -> bool:
    """True when every block is plain (``is_plain_block``); any other tower takes the plain path."""
    return all(is_plain_block(block) for block in tower.transformer.resblocks)


class _Packing:
    """Where each class's suffix tokens sit in the packed sequence (after the P prefix tokens)."""

    def __init__(self, n_prefix: int, eot: torch.Tensor):
        lengths = eot - n_prefix + 1
        self.order = torch.argsort(lengths, stable=True)  # classes by suffix length
        sorted_lengths = lengths[self.order]
        self.valid = torch.arange(int(lengths.max()), device=eot.device) < sorted_lengths.unsqueeze(1)
        # packed index of each class's end-of-text token, in the sorted order
        self.last = n_prefix + torch.cumsum(sorted_lengths, 0) - 1
        self.restore = torch.argsort(self.order)
        values, counts = torch.unique_consecutive(sorted_lengths, return_counts=True)
        self.groups = []  # (start, classes, length, mask) per suffix length
        start = n_prefix
        for length, count in zip(values.tolist(), counts.tolist()):
            cols = torch.arange(n_prefix + length, device=eot.device)
            rows = torch.arange(length, device=eot.device).unsqueeze(1)
            mask = None if length == 1 else (cols < n_prefix) | (cols - n_prefix <= rows)
            self.groups.append((start, count, length, mask))
            start += count * length


def _attend(attn: nn.MultiheadAttention, h: torch.Tensor, packing: _Packing, n_prefix: int) -> torch.Tensor:
    """Multi-head self-attention over the packed sequences h (B, T, W), as the causal mask would do it."""
    b, t, width = h.shape
    heads = attn.num_heads
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).view(b, t, 3, heads, width // heads).unbind(2)

    def batch(x, start, count, length):  # (B, count * length, heads, d) -> (B, count, heads, length, d)
        return x[:, start : start + count * length].unflatten(1, (count, length)).transpose(2, 3)

    kp, vp = batch(k, 0, 1, n_prefix), batch(v, 0, 1, n_prefix)
    out = [F.scaled_dot_product_attention(batch(q, 0, 1, n_prefix), kp, vp, is_causal=True)]
    for start, count, length, mask in packing.groups:
        keys = torch.cat([kp.expand(-1, count, -1, -1, -1), batch(k, start, count, length)], dim=3)
        values = torch.cat([vp.expand(-1, count, -1, -1, -1), batch(v, start, count, length)], dim=3)
        out.append(F.scaled_dot_product_attention(batch(q, start, count, length), keys, values, attn_mask=mask))
    attended = torch.cat([o.transpose(2, 3).reshape(b, -1, width) for o in out], dim=1)
    return attn.out_proj(attended)


def encode_shared_prefix(tower: TextTower, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
    """Features equal to ``tower(cat([prefix expanded to K rows, suffix], 1), eot)``.

    prefix (P, W) is shared by all K classes; suffix (K, S, W) holds each class's remaining token
    embeddings; eot (K,) indexes the end-of-text token in the full sequence (P <= eot < P + S).
    Suffix positions after a class's end-of-text token are never computed. A batch of prefixes
    (B, P, W) gives (B, K, D): every prefix with every class suffix.
    """
    _check_inputs(tower, prefix, suffix, eot)
    batched = prefix.dim() == 3
    prefixes = prefix if batched else prefix.unsqueeze(0)
    n_prefix = prefixes.shape[1]
    packing = _Packing(n_prefix, eot)
    pos = tower.positional_embedding.to(prefix.dtype)
    longest = packing.valid.shape[1]
    tokens = (suffix[:, :longest] + pos[n_prefix : n_prefix + longest])[packing.order][packing.valid]
    x = torch.cat([prefixes + pos[:n_prefix], tokens.expand(prefixes.shape[0], -1, -1)], dim=1)
    for block in tower.transformer.resblocks:
        x = x + block.ls_1(_attend(block.attn, block.ln_1(x), packing, n_prefix))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    pooled = x[:, packing.last][:, packing.restore]
    features = tower.project(tower.ln_final(pooled))
    return features if batched else features[0]


def _check_inputs(tower: TextTower, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor) -> None:
    if prefix.dim() not in (2, 3) or suffix.dim() != 3 or eot.dim() != 1:
        raise ConfigError(
            f"encode_shared_prefix needs prefix (P, W) or (B, P, W), suffix (K, S, W) and eot (K,); got shapes "
            f"{tuple(prefix.shape)}, {tuple(suffix.shape)}, {tuple(eot.shape)}"
        )
    p, width = prefix.shape[-2:]
    k, s, suffix_width = suffix.shape
    if width != tower.width or suffix_width != tower.width:
        raise ConfigError(f"prefix and suffix must have the text tower's width {tower.width}; got {width}, {suffix_width}")
    if eot.shape[0] != k or k == 0:
        raise ConfigError(f"eot must give one end-of-text index per suffix row ({k}); got {eot.shape[0]}")
    if p + s > tower.context_length:
        raise ConfigError(f"prefix + suffix length {p + s} exceeds the context length {tower.context_length}")
    if int(eot.min()) < p or int(eot.max()) >= p + s:
        raise ConfigError(
            f"eot indexes the full sequence and must lie in [{p}, {p + s - 1}] (after the {p}-token prefix); "
            f"got values from {int(eot.min())} to {int(eot.max())}"
        )
