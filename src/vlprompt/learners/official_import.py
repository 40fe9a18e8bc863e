"""Official checkpoints of CoOp-family methods as vlprompt prompts (``vlprompt import``).

Each official repository trains with Dassl and saves its registered model's ``state_dict`` (see
``dassl_checkpoint``). What that holds, per method, and where each tensor goes in vlprompt:

* CoOp, ProGrad, Nemesis, KgCoOp (model ``prompt_learner``): ``ctx`` (M, W) or, class-specific,
  (K, M, W) -> coop's ``ctx``. KgCoOp's ``bias_vectors`` (1, 512) and ``meta_net.linear1`` (512 x 512)
  are created but never used by its forward pass: checked and left out.
* CoCoOp (``prompt_learner``): ``ctx`` (M, W), ``meta_net.linear1`` (D/16 x D) and ``linear2``
  (W x D/16) -> cocoop's ``ctx``, ``meta_net.0`` and ``meta_net.2`` (D: the image feature width).
* MaPLe (``MultiModalPromptLearner``, the whole model): ``prompt_learner.ctx`` -> ``ctx``;
  ``prompt_learner.proj`` -> ``projections.0``; ``compound_prompts_text.{i}`` -> ``deep_text.{i+1}``;
  ``compound_prompt_projections.{i}`` -> ``projections.{i+1}`` (both Linear(W_text -> W_image), same
  weight layout); the depth J is one more than the number of compound prompts.
* IVLP and PromptSRC (``VLPromptLearner``, the whole model): ``prompt_learner.ctx`` -> ``ctx``;
  ``text_encoder.transformer.resblocks.{j}.VPT_shallow`` -> ``deep_text.{j}``; ``image_encoder.VPT`` ->
  ``vision_ctx``; ``image_encoder.transformer.resblocks.{j}.VPT_shallow`` -> ``deep_vision.{j}``.

Every file also holds ``token_prefix``/``token_suffix``: the token embeddings around the context for
its class list, which the official ``load_model`` deletes before loading. They are not imported
(vlprompt rebuilds them for any class list) but compared with the ones vlprompt builds for the
given classes and backbone, which catches a wrong class list or order, other init words and another
CLIP. The whole-model files (MaPLe, IVLP, PromptSRC) also hold the frozen CLIP weights: each is
compared with the backbone's. Context length M, class-specific context and prompt depths come from
the shapes; options the shapes cannot tell (``ctx_init``, ``class_token_position``, ...) are given.
Nothing is written unless every check passes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlprompt.backbones import Backbone
from vlprompt.backbones.deep_prompts import token_vit_size
from vlprompt.errors import ArtifactError, ConfigError
from vlprompt.learners.artifact import save_pretrained
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.dassl_checkpoint import DasslCheckpoint, find_checkpoint_file, read_dassl_checkpoint
from vlprompt.learners.registry import LEARNERS, build_learner

#: how close a saved fp16 copy of a frozen tensor must be to the backbone's (fp16 keeps 11 bits)
RTOL, ATOL = 2e-3, 1e-4
#: KgCoOp creates these with a fixed width, whatever the backbone
KGCOOP_UNUSED_WIDTH = 512


class _Refused(Exception):
    """A problem with the file's content; ``convert_official`` turns it into one ArtifactError."""


@dataclass
class Converted:
    """A checkpoint's tensors under vlprompt's names, with the options its shapes fix."""

    options: dict
    tensors: dict[str, torch.Tensor]
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)  # token_prefix / token_suffix as saved
    frozen: dict[str, torch.Tensor] = field(default_factory=dict)  # the official CLIP weights saved alongside
    unused: list[str] = field(default_factory=list)  # saved tensors the official forward pass never reads


class _Keys:
    """The state dict being taken apart: each key is taken once with its shape checked; leftovers are refused."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str = ""):
        self.state, self.prefix, self.taken = state, prefix, set()

    def has(self, key: str) -> bool:
        return self.prefix + key in self.state

    def take_any(self, key: str) -> torch.Tensor:
        """Tensor ``key`` (under the prefix), whatever its shape: the caller checks it."""
        name = self.prefix + key
        if name not in self.state:
            raise _Refused(f"it has no tensor {name!r}")
        self.taken.add(name)
        return self.state[name]

    def take(self, key: str, *shape: int | None, optional: bool = False) -> torch.Tensor | None:
        """Tensor ``key`` (under the prefix) of shape ``shape``, whose None entries are free."""
        if optional and not self.has(key):
            return None
        tensor = self.take_any(key)
        if tensor.dim() != len(shape) or any(s is not None and s != t for s, t in zip(shape, tensor.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise _Refused(f"{self.prefix + key!r} has shape {tuple(tensor.shape)} where {want} is expected")
        return tensor

    def numbered(self, pattern: str) -> list[int]:
        """Sorted indices i of keys matching ``pattern`` with ``{i}`` in it (under the prefix)."""
        regex = re.compile(re.escape(self.prefix + pattern).replace(r"\{i\}", r"(\d+)"))
        return sorted(int(m.group(1)) for k in self.state if (m := regex.fullmatch(k)))

    def rest(self, *prefixes: str) -> dict[str, torch.Tensor]:
        """Untaken tensors whose names start with one of ``prefixes``, taken now."""
        found = {k: v for k, v in self.state.items() if k not in self.taken and k.startswith(prefixes)}
        self.taken |= set(found)
        return found

    def leftover(self) -> list[str]:
        return [k for k in self.state if k not in self.taken]


def _tokens(keys: _Keys, n_classes: int, n_ctx: int, backbone: Backbone) -> dict[str, torch.Tensor]:
    width, length = backbone.text.width, backbone.context_length
    found = {"token_prefix": keys.take("token_prefix", n_classes, 1, width, optional=True),
             "token_suffix": keys.take("token_suffix", n_classes, length - 1 - n_ctx, width, optional=True)}
    return {k: v for k, v in found.items() if v is not None}


def _context(keys: _Keys, backbone: Backbone, n_classes: int, class_specific: bool) -> torch.Tensor:
    """``ctx`` (M, W), or (K, M, W) where class-specific contexts are allowed."""
    width = backbone.text.width
    ctx = keys.take_any("ctx")
    if ctx.dim() == 3 and class_specific:
        if ctx.shape[0] != n_classes:
            raise _Refused(f"its class-specific context 'ctx' {tuple(ctx.shape)} has one context per class for "
                           f"{ctx.shape[0]} classes, but {n_classes} class names were given")
    elif ctx.dim() != 2:
        raise _Refused(f"'ctx' has shape {tuple(ctx.shape)} where (M, {width}) is expected")
    if ctx.shape[-1] != width:
        raise _Refused(f"'ctx' has width {ctx.shape[-1]} where the text width of {backbone.identity.name} is {width}")
    return ctx


def _coop(keys: _Keys, backbone: Backbone, n_classes: int) -> Converted:
    ctx = _context(keys, backbone, n_classes, class_specific=True)
    n_ctx = ctx.shape[-2]
    return Converted({"n_ctx": n_ctx, "csc": ctx.dim() == 3}, {"ctx": ctx}, _tokens(keys, n_classes, n_ctx, backbone))


def _kgcoop(keys: _Keys, backbone: Backbone, n_classes: int) -> Converted:
    converted = _coop(keys, backbone, n_classes)
    w = KGCOOP_UNUSED_WIDTH
    unused = [("bias_vectors", (1, w)), ("meta_net.linear1.weight", (w, w)), ("meta_net.linear1.bias", (w,))]
    for key, shape in unused:
        keys.take(key, *shape)
    converted.unused = [k for k, _ in unused]
    return converted


def _cocoop(keys: _Keys, backbone: Backbone, n_classes: int) -> Converted:
    ctx = _context(keys, backbone, n_classes, class_specific=False)
    n_ctx, width, dim = ctx.shape[0], backbone.text.width, backbone.embed_dim
    hidden = dim // 16
    tensors = {"ctx": ctx,
               "meta_net.0.weight": keys.take("meta_net.linear1.weight", hidden, dim),
               "meta_net.0.bias": keys.take("meta_net.linear1.bias", hidden),
               "meta_net.2.weight": keys.take("meta_net.linear2.weight", width, hidden),
               "meta_net.2.bias": keys.take("meta_net.linear2.bias", width)}
    return Converted({"n_ctx": n_ctx}, tensors, _tokens(keys, n_classes, n_ctx, backbone))


FROZEN = ("image_encoder.", "text_encoder.", "logit_scale")


def _maple(keys: _Keys, backbone: Backbone, n_classes: int) -> Converted:
    keys.prefix = "prompt_learner."
    ctx = _context(keys, backbone, n_classes, class_specific=False)
    n_ctx, text_w, vision_w = ctx.shape[0], backbone.text.width, token_vit_size(backbone.visual)[1]
    deep = keys.numbered("compound_prompts_text.{i}")
    projected = keys.numbered("compound_prompt_projections.{i}.weight")
    if deep != list(range(len(deep))) or projected != deep:
        raise _Refused(f"its compound prompts are numbered {deep} and their projections {projected}; MaPLe "
                       "saves compound_prompts_text.0..J-2 and compound_prompt_projections.0..J-2")
    tensors = {"ctx": ctx, "projections.0.weight": keys.take("proj.weight", vision_w, text_w),
               "projections.0.bias": keys.take("proj.bias", vision_w)}
    for i in deep:
        tensors[f"deep_text.{i + 1}"] = keys.take(f"compound_prompts_text.{i}", n_ctx, text_w)
        tensors[f"projections.{i + 1}.weight"] = keys.take(f"compound_prompt_projections.{i}.weight", vision_w, text_w)
        tensors[f"projections.{i + 1}.bias"] = keys.take(f"compound_prompt_projections.{i}.bias", vision_w)
    tokens = _tokens(keys, n_classes, n_ctx, backbone)
    keys.prefix = ""
    return Converted({"n_ctx": n_ctx, "prompt_depth": len(deep) + 1}, tensors, tokens, keys.rest(*FROZEN))


def _ivlp(keys: _Keys, backbone: Backbone, n_classes: int, frozen_copies: tuple[str, ...] = ()) -> Converted:
    keys.prefix = "prompt_learner."
    ctx = _context(keys, backbone, n_classes, class_specific=False)
    n_text, text_w, vision_w = ctx.shape[0], backbone.text.width, token_vit_size(backbone.visual)[1]
    tokens = _tokens(keys, n_classes, n_text, backbone)
    keys.prefix = ""
    if not keys.has("image_encoder.VPT"):
        raise _Refused("it has no image prompts 'image_encoder.VPT' (an IVLP trained with vision depth 0, or "
                       "not an IVLP/PromptSRC file); vlprompt's ivlp prompts both towers")
    vision = keys.take("image_encoder.VPT", None, vision_w)
    tensors = {"ctx": ctx, "vision_ctx": vision}
    depths = {}
    for side, tower, width, n in (("text", "text_encoder", text_w, n_text), ("vision", "image_encoder", vision_w,
                                                                               vision.shape[0])):
        blocks = keys.numbered(f"{tower}.transformer.resblocks.{{i}}.VPT_shallow")
        if blocks != list(range(1, len(blocks) + 1)):
            raise _Refused(f"its {side} prompts sit in blocks {blocks}; IVLP prompts blocks 1..J-1 without gaps")
        for j in blocks:
            tensors[f"deep_{side}.{j}"] = keys.take(f"{tower}.transformer.resblocks.{j}.VPT_shallow", n, width)
        depths[side] = len(blocks) + 1
    options = {"n_ctx_text": n_text, "n_ctx_vision": vision.shape[0], "prompt_depth_text": depths["text"],
               "prompt_depth_vision": depths["vision"]}
    return Converted(options, tensors, tokens, keys.rest(*FROZEN, *frozen_copies))


def _promptsrc(keys: _Keys, backbone: Backbone, n_classes: int) -> Converted:
    return _ivlp(keys, backbone, n_classes, frozen_copies=(ZS_COPY,))


#: PromptSRC keeps a frozen copy of CLIP's image tower inside its prompt learner (its zero-shot teacher)
ZS_COPY = "prompt_learner.ZS_image_encoder."


@dataclass(frozen=True)
class OfficialMethod:
    title: str
    repository: str
    model_name: str  # the Dassl model (folder) the trainer registers
    learner: str  # the vlprompt learner that computes the same prompts
    convert: Callable[[_Keys, Backbone, int], Converted]
    holds: str  # what its file holds, for messages and docs


_COOP_HOLDS = "prompt_learner/ with 'ctx' (M, W) or class-specific (K, M, W), 'token_prefix', 'token_suffix'"
_WHOLE = "and the frozen CLIP weights (image_encoder.*, text_encoder.*, logit_scale)"
OFFICIAL_METHODS: dict[str, OfficialMethod] = {
    "coop": OfficialMethod("CoOp", "KaiyangZhou/CoOp", "prompt_learner", "coop", _coop, _COOP_HOLDS),
    "prograd": OfficialMethod("ProGrad", "BeierZhu/Prompt-align", "prompt_learner", "coop", _coop, _COOP_HOLDS),
    "nemesis": OfficialMethod("Nemesis", "ShyFoo/Nemesis", "prompt_learner", "coop", _coop, _COOP_HOLDS),
    "kgcoop": OfficialMethod("KgCoOp", "htyao89/KgCoOp", "prompt_learner", "coop", _kgcoop,
                             _COOP_HOLDS + ", and the unused 'bias_vectors' (1, 512), 'meta_net.linear1' (512 x 512)"),
    "cocoop": OfficialMethod("CoCoOp", "KaiyangZhou/CoOp", "prompt_learner", "cocoop", _cocoop,
                             "prompt_learner/ with 'ctx' (M, W), 'meta_net.linear1' (D/16 x D), 'meta_net.linear2' "
                             "(W x D/16), 'token_prefix', 'token_suffix'"),
    "maple": OfficialMethod("MaPLe", "muzairkhattak/multimodal-prompt-learning", "MultiModalPromptLearner", "maple",
                            _maple, "MultiModalPromptLearner/ with prompt_learner.ctx (M, W), .proj, "
                            ".compound_prompts_text.0..J-2, .compound_prompt_projections.0..J-2, .token_prefix, "
                            ".token_suffix " + _WHOLE),
    "ivlp": OfficialMethod("IVLP", "muzairkhattak/multimodal-prompt-learning", "VLPromptLearner", "ivlp", _ivlp,
                           "VLPromptLearner/ with prompt_learner.ctx (M, W), .token_prefix, .token_suffix, "
                           "image_encoder.VPT, *.transformer.resblocks.1..J-1.VPT_shallow " + _WHOLE),
    "promptsrc": OfficialMethod("PromptSRC", "muzairkhattak/PromptSRC", "VLPromptLearner", "ivlp", _promptsrc,
                                "IVLP's tensors plus prompt_learner.ZS_image_encoder.* " + _WHOLE),
}

#: options that come from the checkpoint's shapes, per vlprompt learner
SHAPE_OPTIONS = {"coop": ("n_ctx", "csc"), "cocoop": ("n_ctx",), "maple": ("n_ctx", "prompt_depth"),
                 "ivlp": ("n_ctx_text", "n_ctx_vision", "prompt_depth_text", "prompt_depth_vision")}


def looks_like(state: dict[str, torch.Tensor]) -> str | None:
    """Which official method's layout a state dict has, by the keys only that method saves."""
    keys = set(state)
    if any("compound_prompts_text" in k for k in keys):
        return "MaPLe"
    if any(k.startswith(ZS_COPY) for k in keys):
        return "PromptSRC"
    if "image_encoder.VPT" in keys or any(k.endswith(".VPT_shallow") for k in keys):
        return "IVLP or PromptSRC"
    if "meta_net.linear2.weight" in keys:
        return "CoCoOp"
    if "bias_vectors" in keys:
        return "KgCoOp"
    if "ctx" in keys and keys <= {"ctx", "token_prefix", "token_suffix"}:
        return "CoOp, ProGrad or Nemesis (one layout)"
    return None


def _methods_like(guess: str) -> list[str]:
    """The methods a ``looks_like`` answer names (whole words: CoOp is not CoCoOp)."""
    return [name for name, m in OFFICIAL_METHODS.items() if re.search(rf"\b{m.title}\b", guess)]


def convert_official(method: str, checkpoint: str | Path, backbone: Backbone, classnames: list[str],
                     options: dict | None = None) -> tuple[PromptLearner, dict]:
    """The learner an official checkpoint stands for, and a record of the import for the artifact's
    metadata; every check is done here, nothing is written."""
    spec = _method(method)
    options = dict(options or {})
    _check_arguments(spec, classnames, options)
    path = find_checkpoint_file(checkpoint, spec.model_name, _savers())
    ckpt = read_dassl_checkpoint(path, f"a {spec.title} checkpoint ({spec.repository}: {spec.holds})")
    keys = _Keys(ckpt.state_dict)
    try:
        converted = spec.convert(keys, backbone, len(classnames))
        extra = keys.leftover()
        if extra:
            raise _Refused(f"it holds tensors {spec.title}'s prompt learner does not have: "
                           f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    except _Refused as exc:
        raise ArtifactError(_wrong_file(ckpt, spec, method, backbone, str(exc))) from None
    _check_finite(ckpt, converted)
    learner = _build(spec, backbone, classnames, {**_default_options(spec, converted.options, options),
                                                  **converted.options}, ckpt)
    _check_tokens(ckpt, spec, learner, converted.tokens)
    _check_frozen(ckpt, spec, backbone, converted.frozen)
    with torch.no_grad():
        result = learner.load_state_dict({k: v.float() for k, v in converted.tensors.items()}, strict=False)
    learned = {**learner.learnable_tensors(), **learner.fitted_tensors()}
    missing = [k for k in learned if k in result.missing_keys]
    if missing or result.unexpected_keys:  # the conversion and the learner disagree: a vlprompt bug
        raise RuntimeError(f"import of {spec.title} left {missing} unset and {result.unexpected_keys} unused")
    record = {"method": spec.title, "repository": spec.repository, "file": path.name, "sha256": ckpt.sha256,
              "epoch": ckpt.epoch, "imported": sorted(converted.tensors),
              "checked_not_imported": sorted(converted.tokens) + converted.unused,
              "frozen_clip_tensors_checked": len(converted.frozen)}
    return learner.eval(), record


def import_official(method: str, checkpoint: str | Path, backbone: Backbone, classnames: list[str],
                    out: str | Path, options: dict | None = None) -> tuple[PromptLearner, Path]:
    """Convert an official checkpoint and save it as a vlprompt prompt directory (atomically; a folder
    that is not a vlprompt prompt is refused untouched)."""
    learner, record = convert_official(method, checkpoint, backbone, classnames, options)
    return learner, save_pretrained(learner, out, metadata={"imported_from": record})


def _check_arguments(spec: OfficialMethod, classnames: list[str], options: dict) -> None:
    """What can be refused before the (possibly large) file is read."""
    if not classnames or len(set(classnames)) != len(classnames):
        raise ConfigError("the class names must be non-empty and each given once, in the order of the "
                          "checkpoint's training labels")
    config = LEARNERS.get(spec.learner).Config
    valid = [f.name for f in dataclasses.fields(config) if f.name not in SHAPE_OPTIONS[spec.learner]]
    derived = [o for o in options if o in SHAPE_OPTIONS[spec.learner]]
    if derived:
        one = len(derived) == 1
        raise ConfigError(f"{', '.join(derived)} come{'s' if one else ''} from the checkpoint's shapes; leave "
                          f"{'it' if one else 'them'} out of the import's options")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{config.owner} has no option {', '.join(unknown)}; the options an import of {spec.title} "
                          f"takes: {', '.join(valid)}")


def _savers() -> dict[str, str]:
    """Dassl model folder -> the methods whose trainers save there (for messages)."""
    titles: dict[str, list[str]] = {}
    for m in OFFICIAL_METHODS.values():
        titles.setdefault(m.model_name, []).append(m.title)
    return {folder: ", ".join(names) for folder, names in titles.items()}


def _method(method: str) -> OfficialMethod:
    if method not in OFFICIAL_METHODS:
        raise ConfigError(f"import method {method!r} is not known; choose one of: {', '.join(OFFICIAL_METHODS)}")
    return OFFICIAL_METHODS[method]


def _wrong_file(ckpt: DasslCheckpoint, spec: OfficialMethod, method: str, backbone: Backbone, problem: str) -> str:
    guess = looks_like(ckpt.state_dict)
    message = f"{ckpt.path} is not {spec.title}'s prompt learner for {backbone.identity.name}: {problem}."
    others = _methods_like(guess) if guess else []
    if guess and method not in others:
        message += f" Its keys are those of a {guess} checkpoint" + (
            f"; import it with `vlprompt import {others[0]} ...`." if len(others) == 1 else ".")
    elif guess is None:
        shown = ", ".join(list(ckpt.state_dict)[:4]) + (" ..." if len(ckpt.state_dict) > 4 else "")
        message += f" Its state dict ({len(ckpt.state_dict)} tensors: {shown}) is no official prompt learner's."
    return message + (f" {spec.title} ({spec.repository}) saves {spec.holds}; W is the text width of "
                      f"{backbone.identity.name}, {backbone.text.width}")


def _check_finite(ckpt: DasslCheckpoint, converted: Converted) -> None:
    bad = [k for k, v in converted.tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise ArtifactError(f"{ckpt.path} holds NaN or infinite values in {', '.join(bad)}: the run that saved it "
                            "diverged, and such a prompt cannot classify; use a checkpoint of a run that did not")


def _default_options(spec: OfficialMethod, derived: dict, given: dict) -> dict:
    """The given options, and the learner's default init phrase where it fits the saved context length
    (as the official code uses its CTX_INIT: CoOp/CoCoOp take the phrase's word count as M, MaPLe/IVLP
    the phrase's first M <= 4 words), else random init words ("X X ...") in the prompt string."""
    options = dict(given)
    if "ctx_init" in options:
        return options
    phrase = LEARNERS.get(spec.learner).Config.from_mapping({}).ctx_init
    words = len(phrase.split(" ")) if phrase else 0
    n_ctx = derived.get("n_ctx", derived.get("n_ctx_text"))
    fits = words == n_ctx if spec.learner in ("coop", "cocoop") else 0 < n_ctx <= min(words, 4)
    options["ctx_init"] = phrase if phrase and fits and not derived.get("csc") else None
    return options


def _build(spec: OfficialMethod, backbone: Backbone, classnames: list[str], options: dict,
           ckpt: DasslCheckpoint) -> PromptLearner:
    if spec.learner == "coop" and options.get("csc") and (options.get("ctx_init") or options.get("ctx_init_template")):
        raise ConfigError(f"{ckpt.path} holds class-specific contexts, which {spec.title}'s code only creates without "
                          "init words; leave ctx_init / ctx_init_template out")
    if spec.learner in ("coop", "cocoop") and options.get("ctx_init"):
        saved, words = options.pop("n_ctx"), len(options["ctx_init"].split(" "))
        if words != saved:
            raise ConfigError(f"ctx_init={options['ctx_init']!r} has {words} words, but the checkpoint's context has "
                              f"{saved} vectors; in {spec.title}'s code the init phrase is the context, so give the "
                              "phrase it was trained with, or leave ctx_init out")
    return build_learner(spec.learner, backbone, classnames, **options)


def _close(saved: torch.Tensor, ours: torch.Tensor) -> torch.Tensor:
    """Per leading row: whether a saved (possibly fp16) tensor equals ours to the saved precision."""
    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.detach().float().cpu().reshape(t.shape[0] if t.dim() else 1, -1)

    saved, ours = rows(saved), rows(ours)
    return ((saved - ours).abs() <= ATOL + RTOL * ours.abs()).all(dim=1)


def _check_tokens(ckpt: DasslCheckpoint, spec: OfficialMethod, learner: PromptLearner,
                  tokens: dict[str, torch.Tensor]) -> None:
    """The saved token embeddings around the context must be the ones vlprompt builds for these classes."""
    ours = learner.tokens
    name = learner.backbone.identity.describe()
    if "token_prefix" in tokens and not _close(tokens["token_prefix"], ours.token_prefix).all():
        raise ArtifactError(f"{ckpt.path}: the start-of-text embedding saved in the checkpoint (token_prefix) is not "
                            f"that of {name}: {spec.title} was trained on another CLIP; give the backbone and "
                            "weights it was trained on (--backbone, --pretrained)")
    if "token_suffix" in tokens:
        rows = (~_close(tokens["token_suffix"], ours.token_suffix)).nonzero().flatten().tolist()
        if rows:
            names = ", ".join(repr(learner.classnames[i]) for i in rows[:3]) + (" ..." if len(rows) > 3 else "")
            phrase = getattr(learner, "placeholder", None) or learner.config.ctx_init or "X X ..."
            raise ArtifactError(
                f"{ckpt.path}: the saved prompt tokens (token_suffix) of {len(rows)} of {len(ours)} classes "
                f"({names}) differ from those of '{phrase} <class>.' with the classes given: the class list or its "
                f"order is not the one {spec.title} was trained on (give its classes in the order of their labels), "
                "or the context was initialised from other words (set ctx_init, or ctx_init_template for ProGrad)")


def _dassl_name(clip_name: str) -> str:
    """Where the Dassl code bases keep a CLIP weight: the image tower in ``image_encoder``, the text tower's
    in ``text_encoder``, the logit scale at the top."""
    if clip_name == "logit_scale":
        return clip_name
    if clip_name.startswith("visual."):
        return f"image_encoder.{clip_name.removeprefix('visual.')}"
    return f"text_encoder.{clip_name}"


def _check_frozen(ckpt: DasslCheckpoint, spec: OfficialMethod, backbone: Backbone,
                  frozen: dict[str, torch.Tensor]) -> None:
    """The CLIP weights a whole-model checkpoint carries must be the backbone's (names as in OpenAI's CLIP,
    which open_clip keeps)."""
    if not frozen:
        return
    reference = {_dassl_name(k): v for k, v in backbone.clip_state_dict().items()}
    unknown, reshaped, differ = [], [], []
    for key, tensor in frozen.items():
        ref = reference.get(key.replace(ZS_COPY, "image_encoder.", 1))
        if ref is None:
            unknown.append(key)
        elif ref.shape != tensor.shape:
            reshaped.append(f"{key} {tuple(tensor.shape)} vs {tuple(ref.shape)}")
        elif not _close(tensor, ref).all():
            differ.append(key)
    name = backbone.identity.describe()
    if unknown or reshaped:
        shown = ", ".join((reshaped + unknown)[:3])
        raise ArtifactError(f"{ckpt.path}: the CLIP weights saved with the prompts do not fit the architecture of "
                            f"{name} ({len(unknown) + len(reshaped)} of {len(frozen)}, e.g. {shown}): {spec.title} was "
                            "trained on another CLIP; give the backbone it was trained on (--backbone, --pretrained)")
    if differ:
        raise ArtifactError(f"{ckpt.path}: {len(differ)} of the {len(frozen)} CLIP weights saved with the prompts "
                            f"(e.g. {', '.join(differ[:3])}) differ from those of {name}: {spec.title} was trained on "
                            "other weights; give the ones it was trained on (--pretrained)")
