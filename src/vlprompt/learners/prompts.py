"""Soft prompts: context vectors spliced into each class's token embeddings (methods.md §1.1).

Each class is tokenised once as "<placeholder> {classname}." where the placeholder is M "X" tokens
(random init) or the init phrase. The fixed embeddings around the context are kept as class-dependent
buffers (never saved) and rebuilt whenever the class list changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError, check_choice

POSITIONS = ("end", "middle", "front")


def resolve_n_ctx(options, default: int) -> None:
    """Settle ``options.n_ctx`` of a CoOp-style context against ``options.ctx_init``.

    The init phrase is the context (CoOp's code takes M from its word count), so an n_ctx that
    differs from that count would be ignored: it is refused instead. Unset, n_ctx becomes the word
    count, or ``default`` without a phrase; the options then record the context length trained.
    """
    owner, words = options.owner, len(options.ctx_init.split(" ")) if options.ctx_init else None
    if options.n_ctx is None:
        object.__setattr__(options, "n_ctx", words or default)
    elif words and options.n_ctx != words:
        raise ConfigError(f"{owner}.n_ctx={options.n_ctx} conflicts with {owner}.ctx_init={options.ctx_init!r}: the "
                          f"init phrase is the context, so its {words} words fix the context length at {words}; "
                          "leave learner.options.n_ctx out, or set learner.options.ctx_init=null for "
                          f"{options.n_ctx} randomly initialised context vectors")
    if options.n_ctx < 1:
        raise ConfigError(f"{owner}.n_ctx={options.n_ctx} must be at least 1")


def saved_context_options(options: dict | None) -> dict:
    """Options of a CoOp-style context as an artifact recorded them: vlprompt before the n_ctx rule saved
    the given n_ctx (16 by default) beside an init phrase that overrode it, so the phrase is what trained."""
    options = dict(options or {})
    if options.get("ctx_init") and options.get("n_ctx") is not None:
        options["n_ctx"] = None
    return options


def init_context(backbone: Backbone, n_ctx: int, ctx_init: str | None, n_classes: int | None = None) -> torch.Tensor:
    """Initial context: the init phrase's token embeddings, or N(0, 0.02^2) (one per class or prompt set when
    ``n_classes``).

    Random values are drawn on the CPU, so a seed gives the same context on every device.
    """
    width = backbone.text.width
    if ctx_init:
        ids = backbone.tokenize([ctx_init])
        n_words = len(ctx_init.split(" "))
        with torch.no_grad():  # learned tensors are fp32 whatever the towers' precision
            return backbone.text.embed(ids)[0, 1 : 1 + n_words].float().clone()
    if n_ctx < 1:
        raise ConfigError(f"n_ctx={n_ctx} must be at least 1")
    shape = (n_classes, n_ctx, width) if n_classes else (n_ctx, width)
    return torch.empty(shape, device="cpu").normal_(0.0, 0.02).to(backbone.device)


def template_prefix(template: str) -> str:
    """The words before the class name of a template ending in " {}." (ProGrad's init phrase)."""
    if not template.endswith(" {}.") or template.count("{}") != 1:
        raise ConfigError(f"template initialisation takes the words before ' {{}}.' at the end of the template; "
                          f"{template!r} does not end that way (the class name must come last)")
    return template[: -len(" {}.")].replace("_", " ")


def template_context_init(backbone: Backbone, template: str, n_ctx: int = 16) -> tuple[torch.Tensor, str]:
    """ProGrad's initial context (methods.md §8.3) and the placeholder string to tokenise the class prompts with.

    The context is (n_ctx - k) zero vectors followed by the embeddings of the first k BPE tokens of
    the template's prefix, k its space-separated word count. The placeholder ("X" * (n_ctx - k),
    then the prefix) fixes which prefix tokens stay in the frozen suffix: a prefix with punctuation
    ("a type of pet, a photo of a") has more BPE tokens than words, and its last ones stay fixed.
    """
    prefix = template_prefix(template)
    k = len(prefix.split(" "))
    if k > n_ctx:
        raise ConfigError(f"the template prefix {prefix!r} has {k} words, more than n_ctx={n_ctx}; "
                          f"use n_ctx >= {k}")
    with torch.no_grad():
        words = backbone.text.embed(backbone.tokenize([prefix]))[0, 1 : 1 + k].float()
    ctx = torch.cat([torch.zeros(n_ctx - k, backbone.text.width, dtype=words.dtype, device=words.device), words])
    placeholder = " ".join(["X"] * (n_ctx - k) + [prefix])
    return ctx, placeholder


class ClassPromptTokens(nn.Module):
    """Fixed token embeddings of every class prompt around an M-vector context slot.

    The words after the context are ``template`` with the class name at its "{}" (CoOp's "{}.";
    TCP's per-dataset ones such as "{}, a type of pet.").
    """

    def __init__(self, backbone: Backbone, classnames: list[str], n_ctx: int, placeholder: str, position: str,
                 template: str = "{}."):
        super().__init__()
        check_choice("class_token_position", position, POSITIONS)
        if position != "end" and not template.startswith("{}"):
            raise ConfigError(f"class_token_position={position!r} needs the class name first after the context; "
                              f"the template {template!r} puts words before it")
        self.n_ctx = n_ctx
        self.position = position
        names = [c.replace("_", " ") for c in classnames]
        check_prompts_fit(backbone, classnames, lambda c: f"{placeholder} {template.format(c.replace('_', ' '))}")
        self.name_lens = [_bpe_len(backbone, n) for n in names]
        ids = backbone.tokenize([f"{placeholder} {template.format(n)}" for n in names])
        with torch.no_grad():
            emb = backbone.text.embed(ids)
        self.register_buffer("token_prefix", emb[:, :1].clone(), persistent=False)  # start-of-text
        self.register_buffer("token_suffix", emb[:, 1 + n_ctx :].clone(), persistent=False)  # class, ".", EOT, pad
        self.register_buffer("eot", backbone.text.eot_positions(ids), persistent=False)

    def __len__(self) -> int:
        return self.token_prefix.shape[0]

    def assemble(self, ctx: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Full prompt embeddings (K, L, W) for a context of shape (M, W) or (K, M, W); with ``start`` and
        ``stop`` only those classes' prompts."""
        stop = len(self) if stop is None else stop
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(stop - start, -1, -1)
        else:
            ctx = ctx[start:stop]
        prefix, suffix = self.token_prefix[start:stop], self.token_suffix[start:stop]
        ctx = ctx.to(prefix.dtype)  # the towers' precision; the gradient reaches the fp32 context
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        rows = []
        half = self.n_ctx // 2
        for i, n in enumerate(self.name_lens[start:stop]):
            name, rest = suffix[i : i + 1, :n], suffix[i : i + 1, n:]
            c = ctx[i : i + 1]
            if self.position == "middle":
                rows.append(torch.cat([prefix[i : i + 1], c[:, :half], name, c[:, half:], rest], dim=1))
            else:  # front
                rows.append(torch.cat([prefix[i : i + 1], name, c, rest], dim=1))
        return torch.cat(rows, dim=0)


def check_prompts_fit(backbone: Backbone, classnames: list[str], prompt: Callable[[str], str]) -> None:
    """Refuse class names whose prompt ``prompt(name)`` would be cut by the text context, naming them and
    how many tokens a name may take (the tokenizer would cut the prompt silently)."""
    too_long = backbone.too_long([prompt(c) for c in classnames])
    if not too_long:
        return
    names = [classnames[i] for i in too_long]
    shown = ", ".join(repr(n if len(n) <= 60 else n[:57] + "...") for n in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    budget = backbone.context_length - 1 - _bpe_len(backbone, prompt("x"))  # start and end, the rest of the prompt
    raise ConfigError(f"class name{'s' if len(names) > 1 else ''} {shown}{more} do{'' if len(names) > 1 else 'es'} "
                      f"not fit the {backbone.context_length}-token text context of {backbone.identity.name}: the "
                      f"prompt {prompt('{}')!r} leaves at most {budget} tokens for a class name; shorten it (for a "
                      "folder: rename the class folder; for a CSV: change the label)")


def encode_in_chunks(encode: Callable[[int, int], torch.Tensor], n_classes: int, chunk: int | None) -> torch.Tensor:
    """``encode(start, stop)`` over consecutive class chunks, concatenated: the same features and gradients
    as one call, with activation memory of one chunk at a time.

    Under autograd each chunk is checkpointed: its activations are dropped after the forward pass and
    recomputed during the backward pass, exactly (the checkpoint restores the random state, so dropout in
    CLIP-LoRA's updates draws the same masks again). ``chunk`` None or >= the class count: one call.
    """
    if not chunk or chunk >= n_classes:
        return encode(0, n_classes)
    parts = []
    for start in range(0, n_classes, chunk):
        stop = min(n_classes, start + chunk)
        if torch.is_grad_enabled():
            parts.append(checkpoint(encode, start, stop, use_reentrant=False))
        else:
            parts.append(encode(start, stop))
    return torch.cat(parts)


def _bpe_len(backbone: Backbone, text: str) -> int:
    """Number of BPE tokens of ``text`` (between start- and end-of-text)."""
    return int(backbone.text.eot_positions(backbone.token_ids([text]))[0]) - 1
