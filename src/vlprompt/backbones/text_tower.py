"""A uniform view of open_clip's causal text towers, taking token *embeddings* instead of ids.

Prompt learners replace some token embeddings with learned vectors, so they need the text tower
split at the embedding layer. open_clip has two layouts of the same computation: the flat ``CLIP``
(attributes on the model) and ``CustomTextCLIP`` (a ``TextTransformer`` under ``model.text``).
Anything else (Hugging Face text towers, bidirectional or CLS-pooled towers) is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from vlprompt.errors import BackboneError


class TextTower(nn.Module):
    """Embedding lookup, causal transformer, final norm, end-of-text pooling and projection."""

    def __init__(self, model: nn.Module):
        super().__init__()
        source = model.text if hasattr(model, "text") else model
        kind = type(source).__name__
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
        if not all(hasattr(source, a) for a in needed):
            raise BackboneError(
                f"text tower {kind} is not supported: vlprompt needs open_clip's causal text transformer "
                "(CLIP or CustomTextCLIP with TextTransformer); Hugging Face text towers are not supported"
            )
        pool = getattr(source, "text_pool_type", getattr(source, "pool_type", "argmax"))
        if pool not in ("argmax", "eos"):
            raise BackboneError(f"text tower {kind} pools with {pool!r}; only end-of-text pooling is supported")
        if source.attn_mask is None:
            raise BackboneError(f"text tower {kind} is bidirectional; prompt learners need a causal text tower")
        if getattr(source, "cls_emb", None) is not None:
            raise BackboneError(f"text tower {kind} appends a CLS token; this is not supported")
        self.token_embedding: nn.Embedding = source.token_embedding
        self.positional_embedding: nn.Parameter = source.positional_embedding
        self.transformer: nn.Module = source.transformer
        self.ln_final: nn.Module = source.ln_final
        self.text_projection = source.text_projection
        self.register_buffer("attn_mask", source.attn_mask.clone(), persistent=False)
        self.pool_type = pool
        self.eos_id = getattr(source, "text_eos_id", None) or getattr(source, "eos_id", None)
        self.context_length = self.positional_embedding.shape[0]
        self.width = self.token_embedding.weight.shape[1]
        #: an execution choice (same numbers either way), not a setting: False runs every prompt at all
        #: context positions, as the reference implementations do (the benchmarks' naive way)
        self.truncate = True

    @property
    def output_dim(self) -> int:
        proj = self.text_projection
        if proj is None:
            return self.width
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    @property
    def depth(self) -> int:
        """Number of transformer blocks (the blocks deep prompts can enter)."""
        return len(self.transformer.resblocks)

    @property
    def heads(self) -> int:
        """Attention heads per block."""
        return self.transformer.resblocks[0].attn.num_heads

    def eot_positions(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Index of the pooled end-of-text token in each row of ``token_ids``."""
        if self.pool_type == "argmax":
            return token_ids.argmax(dim=-1)
        return (token_ids == self.eos_id).int().argmax(dim=-1)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (without positions) of ``token_ids``, shape (N, L, width)."""
        return self.token_embedding(token_ids)

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        proj = self.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj

    def forward(self, embeddings: torch.Tensor, eot: torch.Tensor, truncate: bool = True) -> torch.Tensor:
        """Text features of prompts given as token embeddings (N, L, width) and their end-of-text index.

        With ``truncate`` (and the tower's own ``truncate``) the sequence is cut after the last end-of-text
        position of the batch: under the causal mask later positions cannot influence any pooled token,
        so the result is the same.
        """
        length = int(eot.max()) + 1 if truncate and self.truncate else embeddings.shape[1]
        x = embeddings[:, :length] + self.positional_embedding[:length].to(embeddings.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]
        return self.project(pooled)
