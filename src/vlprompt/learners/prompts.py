"""Soft prompts: context vectors spliced into each class's token embeddings (methods.md §1.1).

Each class is tokenised once as "<placeholder> {classname}." where the placeholder is M "X" tokens
(random init) or the init phrase. The fixed embeddings around the context are kept as class-dependent
buffers (never saved) and rebuilt whenever the class list changes.
"""

from __future__ import annotations

import torch
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError, check_choice

POSITIONS = ("end", "middle", "front")


def init_context(backbone: Backbone, n_ctx: int, ctx_init: str | None, n_classes: int | None = None) -> torch.Tensor:
    """Initial context: the init phrase's token embeddings, or N(0, 0.02^2) (per class when ``n_classes``)."""
    width = backbone.text.width
    if ctx_init:
        ids = backbone.tokenize([ctx_init])
        n_words = len(ctx_init.split(" "))
        with torch.no_grad():
            return backbone.text.embed(ids)[0, 1 : 1 + n_words].clone()
    if n_ctx < 1:
        raise ConfigError(f"n_ctx={n_ctx} must be at least 1")
    shape = (n_classes, n_ctx, width) if n_classes else (n_ctx, width)
    return torch.empty(shape).normal_(0.0, 0.02)


class ClassPromptTokens(nn.Module):
    """Fixed token embeddings of every class prompt around an M-vector context slot."""

    def __init__(self, backbone: Backbone, classnames: list[str], n_ctx: int, placeholder: str, position: str):
        super().__init__()
        check_choice("class_token_position", position, POSITIONS)
        self.n_ctx = n_ctx
        self.position = position
        names = [c.replace("_", " ") for c in classnames]
        self.name_lens = [_bpe_len(backbone, n) for n in names]
        ids = backbone.tokenize([f"{placeholder} {n}." for n in names])
        with torch.no_grad():
            emb = backbone.text.embed(ids)
        self.register_buffer("token_prefix", emb[:, :1].clone(), persistent=False)  # start-of-text
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx :].clone(), persistent=False)  # class, ".", EOT, pad
        self.register_buffer("eot", backbone.text.eot_positions(ids), persistent=False)

    def __len__(self) -> int:
        return self.token_prefix.shape[0]

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """Full prompt embeddings (K, L, W) for a context of shape (M, W) or (K, M, W)."""
        k = len(self)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(k, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        rows = []
        half = self.n_ctx // 2
        for i, n in enumerate(self.name_lens):
            name, rest = suffix[i : i + 1, :n], suffix[i : i + 1, n:]
            c = ctx[i : i + 1]
            if self.position == "middle":
                rows.append(torch.cat([prefix[i : i + 1], c[:, :half], name, c[:, half:], rest], dim=1))
            else:  # front
                rows.append(torch.cat([prefix[i : i + 1], name, c, rest], dim=1))
        return torch.cat(rows, dim=0)


def _bpe_len(backbone: Backbone, text: str) -> int:
    """Number of BPE tokens of ``text`` (between start- and end-of-text)."""
    ids = backbone.tokenize([text])
    return int(backbone.text.eot_positions(ids)[0]) - 1
