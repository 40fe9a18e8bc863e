"""``load_backbone``: every open_clip model and pretrained tag, local checkpoints, and the embedded model.

The returned ``Backbone`` is frozen and in eval mode. It carries an identity (name, tag, SHA-256 of
the weights) that travels into every artifact and result, so a prompt is never silently applied to
a model it was not trained for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.model import build_model_from_openai_state_dict, convert_to_custom_text_state_dict
from torch import nn

from vlprompt.backbones.download import checkpoint_of_tag
from vlprompt.backbones.embedded import BACKBONES, CONFIG_DIR, EMBEDDED_NAME, ShippedBackbone
from vlprompt.backbones.image_tokens import encode_image_tokens, image_token_count
from vlprompt.backbones.text_tower import TextTower
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.io import write_bytes, write_text

log = logging.getLogger(__name__)

RANDOM_TAGS = (None, "", "none", "random")
#: ``pretrained``'s default: the weights a model's name stands for (the embedded model's shipped ones)
DEFAULT_WEIGHTS = "default"
BACKBONE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")

open_clip.add_model_config(CONFIG_DIR)


class _OpenClipToDebug(logging.Filter):
    """Re-log open_clip's messages (it logs on the root logger) at debug level under our own logger.

    open_clip announces every step at INFO and warns "No pretrained weights loaded" whenever a model
    is created before its weights are loaded from a file, which is how this module loads the
    embedded and local checkpoints; the user sees those lines only with ``--verbose``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}open_clip{os.sep}" not in record.pathname:
            return True
        log.debug("open_clip: %s", record.getMessage())
        return False


@contextmanager
def _quiet_open_clip():
    root = logging.getLogger()
    quiet = _OpenClipToDebug()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


@dataclass(frozen=True)
class BackboneIdentity:
    """What a prompt was trained on: architecture name, weights source and a hash of the weights."""

    name: str
    pretrained: str
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BackboneIdentity:
        return cls(name=d["name"], pretrained=d["pretrained"], sha256=d["sha256"])

    def describe(self) -> str:
        return f"{self.name} ({self.pretrained}, sha256 {self.sha256[:12]})"


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Backbone(nn.Module):
    """A frozen open_clip model with its tokenizer, preprocessing settings and identity."""

    def __init__(self, model: nn.Module, tokenizer, preprocess: dict, identity: BackboneIdentity):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.text = TextTower(model)
        self.tokenizer = tokenizer
        self.image_size = int(preprocess["image_size"])
        self.mean = tuple(preprocess["mean"])
        self.std = tuple(preprocess["std"])
        self.interpolation = preprocess.get("interpolation", "bicubic")
        self.identity = identity

    def train(self, mode: bool = True):
        # The frozen backbone never enters train mode (BatchNorm statistics stay fixed, as in CoOp).
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def dtype(self) -> torch.dtype:
        """Storage precision of the frozen towers (``backbone.precision``)."""
        return self.model.logit_scale.dtype

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    def clip_state_dict(self) -> dict[str, torch.Tensor]:
        """The frozen weights under OpenAI CLIP's names, which open_clip keeps: ``visual.*``, the text tower's
        (``token_embedding.weight``, ``transformer.*``, ``ln_final.*``, ...) and ``logit_scale`` (its log), to
        compare with the CLIP weights other code bases save beside their prompts."""
        return {**{f"visual.{k}": v for k, v in self.visual.state_dict().items()}, **self.text.state_dict(),
                "logit_scale": self.model.logit_scale}

    @property
    def embed_dim(self) -> int:
        return self.text.output_dim

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.detach().float().exp()

    @property
    def context_length(self) -> int:
        """Tokens of the text context, start- and end-of-text included."""
        return self.text.context_length

    def too_long(self, texts: list[str]) -> list[int]:
        """Indices of the texts that do not fit the text context (open_clip's tokenizer would cut them)."""
        return self._tokenize(texts)[1]

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        # one token more than the context: a text that fits leaves it as padding, a longer one does not
        length = self.context_length
        with torch.device("cpu"):
            ids = self.tokenizer(list(texts), context_length=length + 1)
            pad = self.tokenizer([""], context_length=length + 1)[0, -1]
        return ids[:, :length], (ids[:, length] != pad).nonzero().flatten().tolist()

    def token_ids(self, texts: list[str]) -> torch.Tensor:
        """Token ids on the CPU, where tokenising runs (for lengths and positions known on the host).

        A text longer than the text context is refused rather than cut: a cut prompt loses its end
        (the class name, the full stop) and its features are those of another text.
        """
        texts = list(texts)
        ids, too_long = self._tokenize(texts)
        if too_long:
            text = texts[too_long[0]]
            shown = text if len(text) <= 80 else text[:77] + "..."
            more = f" (and {len(too_long) - 1} more)" if len(too_long) > 1 else ""
            raise ConfigError(f"the text {shown!r}{more} does not fit the {self.context_length}-token text context "
                              f"of {self.identity.name}; shorten it")
        return ids

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids on the backbone's device."""
        return self.token_ids(texts).to(self.device)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features (images are cast to the towers' precision)."""
        return self.model.encode_image(images.to(self.dtype))

    def encode_image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised (B, 1 + R, D) features: the pooled one (``encode_image``'s), then R regions'."""
        return encode_image_tokens(self.visual, images.to(self.dtype))

    @property
    def image_tokens(self) -> int:
        """1 + R, the tokens per image of ``encode_image_tokens``."""
        return image_token_count(self.visual)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised text features of plain strings, through the same path prompt learners use."""
        ids = self.tokenize(texts)
        return self.text(self.text.embed(ids), self.text.eot_positions(ids))


OPEN_CLIP_DIR_CONFIG = "open_clip_config.json"
OPEN_CLIP_DIR_WEIGHTS = "open_clip_model.safetensors"


def open_clip_knows(identity: BackboneIdentity) -> bool:
    """Whether plain open_clip builds this backbone from its name and tag (or checkpoint file) alone;
    a model that vlprompt ships (its config registered by vlprompt, its weights in vlprompt's format)
    it does not."""
    return identity.name not in BACKBONES


def save_open_clip_dir(backbone: Backbone, directory: str | os.PathLike) -> Path:
    """Write ``backbone`` in open_clip's ``local-dir`` format, for code without vlprompt:
    ``open_clip.create_model_and_transforms("local-dir:DIRECTORY")`` (open_clip 3.0 or later) builds it
    with the same weights (fp32) and image preprocessing."""
    from safetensors.torch import save

    directory = Path(directory)
    with _quiet_open_clip():
        model_cfg = open_clip.get_model_config(backbone.identity.name)
    if model_cfg is None:
        raise BackboneError(f"open_clip has no configuration of {backbone.identity.name}")
    acts = {type(m).__name__ for m in backbone.model.modules()}
    if "QuickGELU" in acts:
        model_cfg["quick_gelu"] = True
    preprocess = {"size": backbone.image_size, "mean": list(backbone.mean), "std": list(backbone.std),
                  "interpolation": backbone.interpolation, "resize_mode": "shortest"}
    state = {k: v.detach().float().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    write_bytes(directory / OPEN_CLIP_DIR_WEIGHTS, save(state))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess, "vlprompt_backbone": backbone.identity.to_dict()}
    write_text(directory / OPEN_CLIP_DIR_CONFIG, json.dumps(config, indent=2) + "\n")
    return directory


def text_context_length(name: str) -> int | None:
    """Tokens of the text context of open_clip model ``name``, from its config (no weights load); None
    for a name open_clip does not know."""
    config = open_clip.get_model_config(name.replace("/", "-"))
    if not config:
        return None
    return int(config.get("text_cfg", {}).get("context_length", 77))  # 77: open_clip's default


def list_backbones() -> list[tuple[str, str]]:
    """(model name, pretrained tag) pairs that ``load_backbone`` accepts by tag."""
    shipped = [(name, tag) for name, spec in BACKBONES.items() for tag in spec.weights]
    return shipped + list(open_clip.list_pretrained())


def load_backbone(
    name: str,
    pretrained: str | os.PathLike | None = DEFAULT_WEIGHTS,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    cache_dir: str | None = None,
    seed: int = 0,
) -> Backbone:
    """Build a frozen backbone.

    ``pretrained`` is an open_clip tag (e.g. ``"openai"``, downloaded when online), a local checkpoint
    file in open_clip or OpenAI state-dict format, or ``None`` (or ``"random"``) for weights drawn from
    ``seed``. Left out, it is the weights the name stands for: the embedded ``vlprompt-tiny`` loads its
    shipped weights (tag ``"world"``); an open_clip name, which has several, is refused naming its tags.
    ``precision`` (fp32, fp16 or bf16) is the storage precision of the frozen towers; the identity
    hashes the weights as loaded, so a prompt trained at one precision loads at any other.
    """
    if precision not in BACKBONE_DTYPES:
        raise BackboneError(f"backbone.precision={precision!r} is not valid; choose one of: "
                            f"{', '.join(repr(p) for p in BACKBONE_DTYPES)}")
    name = name.replace("/", "-")
    if name not in open_clip.list_models():
        raise BackboneError(
            f"unknown backbone {name!r}; run `vlprompt list backbones` to see the names "
            f"(e.g. {EMBEDDED_NAME}, ViT-B-16, RN50)"
        )
    if isinstance(pretrained, str) and pretrained == DEFAULT_WEIGHTS:
        pretrained = _default_weights(name)
    tag = None if pretrained in RANDOM_TAGS else str(pretrained)
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(seed)
        shipped = BACKBONES.get(name) if name in BACKBONES else None
        if shipped and (tag is None or tag in shipped.weights or shipped.is_weights_file(tag)):
            model, preprocess = _load_shipped(shipped, tag)
        elif tag is not None and Path(tag).is_file():
            model, preprocess = _load_local_file(name, Path(tag))
        elif tag is not None:
            model, preprocess = _load_tag(name, tag, cache_dir)
        else:
            model, preprocess = _create(name)
    if name in BACKBONES:
        preprocess = dict(BACKBONES.get(name).preprocess)
    identity = BackboneIdentity(name=name, pretrained=tag or "random", sha256=state_dict_sha256(model))
    with _quiet_open_clip():
        tokenizer = open_clip.get_tokenizer(name)
    backbone = Backbone(model.float(), tokenizer, preprocess, identity)
    return backbone.to(device=device, dtype=BACKBONE_DTYPES[precision])


def _default_weights(name: str) -> str:
    """The tag a name alone loads; a model without one is refused rather than silently left random."""
    shipped = BACKBONES.get(name) if name in BACKBONES else None
    if shipped and shipped.default:
        return shipped.default
    tags = open_clip.list_pretrained_tags_by_model(name)
    choices = f"a tag ({', '.join(repr(t) for t in tags)}), " if tags else ""
    raise BackboneError(f"{name} has no default weights; pass pretrained as {choices}the path of a local "
                        "checkpoint file, or None for random weights")


def _preprocess_of(model: nn.Module) -> dict:
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return {
        "image_size": int(size),
        "mean": tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        "std": tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        "interpolation": cfg.get("interpolation", "bicubic"),
    }


def _create(name: str, **kwargs) -> tuple[nn.Module, dict]:
    model = open_clip.create_model(name, **kwargs)
    return model, _preprocess_of(model)


def _load_shipped(spec: ShippedBackbone, tag: str | None) -> tuple[nn.Module, dict]:
    """A shipped architecture: random (tag None), its weights by tag, or a file in its format."""
    model = open_clip.create_model(spec.name)
    if tag is not None:
        path = spec.weights.get(tag) or Path(tag)
        if not path.is_file():
            raise BackboneError(
                f"weights file {path} of {spec.name} is missing from this installation; reinstall "
                "vlprompt or run `vlprompt world pretrain` to produce it"
            )
        model.load_state_dict(spec.load_state_dict(path))
    return model, {}


def _load_tag(name: str, tag: str, cache_dir: str | None) -> tuple[nn.Module, dict]:
    if name in BACKBONES:
        tags = ", ".join(repr(t) for t in BACKBONES.get(name).weights)
        raise BackboneError(
            f"weights {tag!r} not found for {name}: pass pretrained={tags} for the shipped "
            "weights or the path of an existing checkpoint file"
        )
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise BackboneError(
            f"pretrained={tag!r} is neither a known tag of {name} nor an existing file; "
            f"known tags: {', '.join(tags) or '(none)'}; or pass the path of a local checkpoint"
        )
    # OpenAI's weights were trained with QuickGELU: building them with GELU silently changes outputs.
    quick = bool(cfg.get("quick_gelu", False)) or tag == "openai"
    hint = (f"pass the checkpoint file as pretrained=/path/to/weights.pt (open_clip or OpenAI format; "
            f"backbone.pretrained=... on the command line), or use the embedded model {EMBEDDED_NAME!r}")
    checkpoint = checkpoint_of_tag(name, tag, cfg, cache_dir, hint)
    # the file open_clip would download for the tag, with the tag's preprocessing: the same model, no hub call
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
    try:
        model = open_clip.create_model(name, pretrained=checkpoint, force_quick_gelu=quick,
                                       force_preprocess_cfg=preprocess)
    except Exception as exc:
        raise BackboneError(f"the weights of {name} ({tag}) in {checkpoint} do not load: {exc}. Delete the file "
                            "to download it again") from exc
    return model, _preprocess_of(model)


def _read_checkpoint(path: Path) -> dict:
    """The tensors of a checkpoint file: safetensors, a tensors-only PyTorch file or a TorchScript archive.

    Nothing else is unpickled. torch's own error and warnings are not passed on: they advise re-running
    with ``weights_only=False``, which would execute whatever the file holds.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            try:  # OpenAI's original checkpoints are TorchScript archives.
                return torch.jit.load(str(path), map_location="cpu").state_dict()
            except Exception:
                pass
    raise BackboneError(f"cannot read checkpoint {path}: it is neither a safetensors file, a PyTorch file of "
                        "tensors only nor a TorchScript archive (vlprompt never loads pickled objects); use the "
                        "checkpoint as published, or convert it to safetensors where you trust it")


def _load_local_file(name: str, path: Path) -> tuple[nn.Module, dict]:
    state = _read_checkpoint(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k in state for k in OPENAI_ONLY_KEYS):
        # OpenAI state-dict format: architecture inferred from the tensors, always QuickGELU.
        try:
            model = build_model_from_openai_state_dict(dict(state), quick_gelu=True, cast_dtype=None).float()
            # open_clip's builder rounds weights through fp16; reload them at their stored precision.
            model.load_state_dict({k: v.float() for k, v in state.items() if k not in OPENAI_ONLY_KEYS})
        except Exception as exc:
            raise BackboneError(f"checkpoint {path} looks like OpenAI format but does not load: {exc}") from exc
        log.info("loaded %s as an OpenAI-format checkpoint (QuickGELU)", path)
        return model, _preprocess_of(model)
    model = open_clip.create_model(name)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise BackboneError(f"checkpoint {path} does not fit the architecture {name}: {exc}") from exc
    return model, _preprocess_of(model)
