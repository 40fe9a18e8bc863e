"""Deep prompts: run open_clip's own tower blocks one at a time, with a hook that edits the tokens between blocks.

MaPLe-style learners (methods.md §4) put learned tokens inside the towers: they replace text
positions before some blocks, and append image tokens after the patch tokens (``encode_text_deep``,
``encode_image_deep``); TCP injects class-aware tokens into the text tower at one middle block
(``encode_text_injected``); MMRL inserts representation tokens (``encode_*_inserted``). open_clip's
``Transformer.forward`` runs all blocks in one call, so these functions take over only that loop
and reuse everything else (embeddings, blocks, norms, pooling, projections) from the model itself.
With no hook and no extra tokens they compute open_clip's own features. Learners size their prompts
with ``token_vit_size``, ``TextTower.depth`` and ``vit_projection``, never reading the towers themselves.

The same loop serves any learner that changes what happens inside the towers: a ``run`` function may
take over a block (``backbones.lora`` runs updated blocks with low-rank attention updates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from vlprompt.backbones.text_tower import TextTower
from vlprompt.errors import BackboneError

#: ``hook(j, x)`` returns the tokens (B, L, W) that enter block ``j`` (0-based) in place of ``x``.
BlockHook = Callable[[int, torch.Tensor], torch.Tensor]
#: ``run(j, block, x, attn_mask)`` runs block ``j`` on ``x`` in place of ``block(x, attn_mask=attn_mask)``
#: (low-rank attention updates run the block's own parts around an updated attention).
BlockRunner = Callable[[int, nn.Module, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def check_token_vit(visual: nn.Module) -> None:
    """Refuse image towers whose tokens cannot carry prompts: ResNets, attention or average pooling."""
    kind = type(visual).__name__
    if kind != "VisionTransformer":
        raise BackboneError(f"deep vision prompts need open_clip's ViT image tower; this backbone has {kind} "
                            "(MaPLe does not support ResNet backbones such as RN50; use a ViT, e.g. ViT-B-16)")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise BackboneError(f"deep vision prompts need class-token pooling; this ViT pools with "
                            f"{'attention' if getattr(visual, 'attn_pool', None) is not None else visual.pool_type!r}, "
                            "which would mix the prompt tokens into the image feature")


def token_vit_size(visual: nn.Module) -> tuple[int, int]:
    """(blocks, width) of a ViT image tower whose tokens can carry prompts; any other tower is refused."""
    check_token_vit(visual)
    return len(visual.transformer.resblocks), visual.transformer.width


def vit_projection(visual: nn.Module) -> torch.Tensor:
    """The frozen (width, D) projection of a ViT's pooled token into the joint space (MMRL++ adds to it)."""
    check_token_vit(visual)
    if visual.proj is None:
        raise BackboneError("this ViT has no output projection: its pooled token is already the image feature")
    return visual.proj


def _check_deep(side: str, deep: Mapping[int, torch.Tensor], blocks: int) -> None:
    bad = sorted(j for j in deep if not 1 <= j < blocks)
    if bad:
        raise BackboneError(f"deep {side} prompts before block(s) {bad} are not possible: they enter blocks 1 to "
                            f"{blocks - 1} of this {side} tower (block 0 takes the shallow prompts)")


def replace_tokens(x: torch.Tensor, start: int, tokens: torch.Tensor) -> torch.Tensor:
    """``x`` (B, L, W) with positions start .. start+n-1 set to ``tokens``: (n, W) in every row, or
    (B, n, W) one set per row."""
    n = tokens.shape[-2]
    fill = tokens.to(x.dtype)
    fill = fill.unsqueeze(0).expand(x.shape[0], -1, -1) if fill.dim() == 2 else fill
    return torch.cat([x[:, :start], fill, x[:, start + n :]], dim=1)


def _run_blocks(transformer: nn.Module, x: torch.Tensor, hook: BlockHook | None,
                attn_mask: torch.Tensor | None = None, run: BlockRunner | None = None) -> torch.Tensor:
    if not getattr(transformer, "batch_first", True):
        raise BackboneError("running the tower block by block needs a batch-first open_clip transformer "
                            "(open_clip >= 2.24 builds them)")
    for j, block in enumerate(transformer.resblocks):
        if hook is not None:
            x = hook(j, x)
        x = block(x, attn_mask=attn_mask) if run is None else run(j, block, x, attn_mask)
    return x


def encode_text_blocks(tower: TextTower, embeddings: torch.Tensor, eot: torch.Tensor,
                       hook: BlockHook | None = None, run: BlockRunner | None = None) -> torch.Tensor:
    """Unnormalised text features of token embeddings (N, L, W), as ``tower(embeddings, eot)`` computes
    them (cut after the last end-of-text token unless the tower's ``truncate`` is off), with ``hook``
    applied before every block and each block run by ``run`` when given."""
    length = int(eot.max()) + 1 if tower.truncate else embeddings.shape[1]
    x = embeddings[:, :length] + tower.positional_embedding[:length].to(embeddings.dtype)
    x = _run_blocks(tower.transformer, x, hook, tower.attn_mask[:length, :length], run)
    x = tower.ln_final(x)
    return tower.project(x[torch.arange(x.shape[0], device=x.device), eot])


def encode_text_deep(tower: TextTower, embeddings: torch.Tensor, eot: torch.Tensor,
                     deep: Mapping[int, torch.Tensor], start: int = 1) -> torch.Tensor:
    """Unnormalised text features of token embeddings (N, L, W) (the shallow prompts already in them) with
    deep prompts: ``deep[j]`` (n, W) replaces positions start .. start+n-1 before block j (MaPLe, IVLP)."""
    _check_deep("text", deep, tower.depth)

    def hook(j: int, x: torch.Tensor) -> torch.Tensor:
        return replace_tokens(x, start, deep[j]) if j in deep else x

    return encode_text_blocks(tower, embeddings, eot, hook)


def encode_text_injected(tower: TextTower, embeddings: torch.Tensor, eot: torch.Tensor, layer: int,
                         tokens: torch.Tensor, start: int = 1, mix: float = 1.0) -> torch.Tensor:
    """Unnormalised text features of token embeddings (N, L, W) with tokens injected at a middle block:
    the hidden states at positions start .. start+n-1 that enter block ``layer`` (0-based) become
    ``mix * tokens + (1 - mix) * hidden`` (``tokens`` (n, W) or (N, n, W); mix 1 replaces them), as
    TCP's class-aware tokens enter the text encoder. Every other block runs as open_clip runs it."""
    blocks = tower.depth
    if not 0 <= layer < blocks:
        raise BackboneError(f"token injection before text block {layer} is not possible: this text tower has "
                            f"{blocks} blocks (valid: 0 to {blocks - 1})")
    n = tokens.shape[-2]
    if start + n > int(eot.min()):
        raise BackboneError(f"injecting {n} tokens at position {start} would overwrite an end-of-text token "
                            f"(the shortest prompt ends at position {int(eot.min())})")

    def hook(j: int, x: torch.Tensor) -> torch.Tensor:
        if j != layer:
            return x
        held = x[:, start : start + n]
        fill = tokens.to(x.dtype)
        return replace_tokens(x, start, mix * fill + (1 - mix) * held)

    return encode_text_blocks(tower, embeddings, eot, hook)


def encode_image_blocks(visual: nn.Module, images: torch.Tensor, extra_tokens: torch.Tensor | None = None,
                        hook: BlockHook | None = None, run: BlockRunner | None = None) -> torch.Tensor:
    """Unnormalised image features of open_clip's ViT with ``extra_tokens`` (n, W) appended after the
    patch tokens (after the positional embedding, before ``ln_pre``), ``hook`` applied before every
    block and each block run by ``run`` when given. Patch dropout runs as open_clip runs it (a no-op
    in eval mode)."""
    check_token_vit(visual)
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    if extra_tokens is not None:
        x = replace_tokens(x, x.shape[1], extra_tokens)  # positions L .. L+n-1: an append
    x = visual.ln_pre(x)
    x = _run_blocks(visual.transformer, x, hook, run=run)
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled


def encode_image_deep(visual: nn.Module, images: torch.Tensor, prompts: torch.Tensor,
                      deep: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Unnormalised image features of open_clip's ViT with ``prompts`` (n, W) appended after the patch tokens
    and deep prompts: ``deep[j]`` (n, W) replaces those n tokens before block j (MaPLe, IVLP)."""
    _check_deep("image", deep, token_vit_size(visual)[0])
    n = prompts.shape[0]

    def hook(j: int, x: torch.Tensor) -> torch.Tensor:
        return replace_tokens(x, x.shape[1] - n, deep[j]) if j in deep else x

    return encode_image_blocks(visual, images, prompts, hook)


def _insert_or_replace(x: torch.Tensor, tokens: torch.Tensor, inserted: bool, mix: float) -> torch.Tensor:
    """``x`` with ``tokens`` (n, W) right after position 0: inserted the first time; every later time the n
    positions inserted earlier become ``mix * tokens + (1 - mix) * their hidden states`` (1: replaced)."""
    n = tokens.shape[0]
    fill = tokens.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
    if inserted and mix != 1.0:
        fill = mix * fill + (1 - mix) * x[:, 1 : 1 + n]
    return torch.cat([x[:, :1], fill, x[:, 1 + n if inserted else 1 :]], dim=1)


def _causal_mask(like: torch.Tensor, length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf"), dtype=like.dtype, device=like.device).triu(1)


def encode_text_inserted(tower: TextTower, embeddings: torch.Tensor, eot: torch.Tensor,
                         tokens: dict[int, torch.Tensor], mix: float = 1.0) -> torch.Tensor:
    """Unnormalised text features with representation tokens inserted after the start-of-text token, as
    MMRL's text side runs: ``tokens`` maps a 0-based block index to (n, W) tokens; before the first such
    block they are inserted (the sequence grows by n, every later position moves right, the causal
    mask grows with it, and the end-of-text token is read n places further), before every later one
    they replace the n inserted hidden states (``mix`` < 1: mix * tokens + (1 - mix) * those states, as
    MMRL++). They enter after the positional embedding, so they have none. With no tokens this is
    ``tower(embeddings, eot)``."""
    blocks = tower.depth
    bad = sorted(j for j in tokens if not 0 <= j < blocks)
    if bad:
        raise BackboneError(f"token insertion before text block(s) {bad} is not possible: this text tower has "
                            f"{blocks} blocks (valid: 0 to {blocks - 1})")
    if not getattr(tower.transformer, "batch_first", True):
        raise BackboneError("deep prompts need a batch-first open_clip transformer (open_clip >= 2.24 builds them)")
    length = int(eot.max()) + 1 if tower.truncate else embeddings.shape[1]
    x = embeddings[:, :length] + tower.positional_embedding[:length].to(embeddings.dtype)
    mask, inserted = tower.attn_mask[:length, :length], 0
    for j, block in enumerate(tower.transformer.resblocks):
        if j in tokens:
            x = _insert_or_replace(x, tokens[j], inserted > 0, mix)
            inserted = tokens[j].shape[0]
            mask = _causal_mask(tower.attn_mask, x.shape[1])
        x = block(x, attn_mask=mask)
    x = tower.ln_final(x)
    return tower.project(x[torch.arange(x.shape[0], device=x.device), eot + inserted])


def encode_image_inserted(visual: nn.Module, images: torch.Tensor, tokens: dict[int, torch.Tensor],
                          mix: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MMRL's image side: ``tokens`` (block index -> (n, W)) are inserted right after the class token
    before the first such block and replace those n positions before every later one (``mix`` as in
    ``encode_text_inserted``). Returns the
    image feature as open_clip pools and projects it (class token) and the mean of the n token outputs
    after ``ln_post``, unprojected (None without tokens), for a projection of the caller's own."""
    blocks, _ = token_vit_size(visual)
    bad = sorted(j for j in tokens if not 0 <= j < blocks)
    if bad:
        raise BackboneError(f"token insertion before image block(s) {bad} is not possible: this image tower has "
                            f"{blocks} blocks (valid: 0 to {blocks - 1})")
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    inserted = 0

    def hook(j: int, h: torch.Tensor) -> torch.Tensor:
        nonlocal inserted
        if j not in tokens:
            return h
        h = _insert_or_replace(h, tokens[j], inserted > 0, mix)
        inserted = tokens[j].shape[0]
        return h

    x = _run_blocks(visual.transformer, x, hook)
    rep = visual.ln_post(x[:, 1 : 1 + inserted]).mean(dim=1) if inserted else None
    pooled, _ = visual._pool(x)
    return (pooled @ visual.proj if visual.proj is not None else pooled), rep
