"""Prompt artifacts: a JSON config plus safetensors with only the learned tensors.

No pickles and no class-dependent buffers: the artifact reloads for any class list (class-specific
context excepted) and refuses a backbone whose weights differ from the ones it was trained on.

A learned tensor under a ``torch.nn.utils.parametrize`` parametrization is saved as the value the
model sees, under its plain name. If the last parametrization has an ``artifact_codec`` name and an
``encode(tensor) -> bytes`` method (QPrompt's quantizer), the tensor is written in that codec's own
file instead and reloads with the exact encoded values into a plain learner.

Codecs come from ``ARTIFACT_CODECS``, filled by the modules that write them: QPrompt registers its
packed format when ``vlprompt.regularizers`` is imported (``vlprompt.from_pretrained`` and every run
import it), a plugin registers its own. This module imports none of them, so the layering holds.

Loading trusts nothing in the directory: config.json records a SHA-256 per tensor file and one of
its own content (checked first, before any file it names is opened: an altered backbone entry never
gets its weights file read), file names must stay inside the directory, codecs are looked up by name
in the registry (nothing named in the file is imported) and tensors must be finite; any failure is
one ``ArtifactError`` saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load, save

from vlprompt.backbones import Backbone, BackboneIdentity, load_backbone
from vlprompt.errors import ArtifactError, BackboneError, ConfigError
from vlprompt.io import atomic_dir, has_format, write_bytes, write_text
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.heads import HEADS
from vlprompt.learners.registry import LEARNERS, build_learner
from vlprompt.registry import Registry
from vlprompt.version import __version__

CONFIG_FILE = "config.json"
TENSORS_FILE = "prompt.safetensors"
FORMAT = "vlprompt-prompt/3"  # 2: a SHA-256 per tensor file, no codec module paths; 3: and of config.json itself
#: formats this vlprompt reads; 2 was written before config.json recorded its own SHA-256
READABLE = ("vlprompt-prompt/2", FORMAT)
CONFIG_DIGEST = "config_sha256"
_RESAVE = "re-save the prompt (rerun its training or save_pretrained) or use an intact copy"

_PARAMETRIZED = re.compile(r"(?:(.+)\.)?parametrizations\.([^.]+)\.original")
#: codec name -> decoder from a codec file's bytes to the tensor; ``@ARTIFACT_CODECS.register("name")`` on
#: the decoder makes the files of parametrizations whose ``artifact_codec`` is "name" savable and loadable
ARTIFACT_CODECS: Registry[Callable[[bytes], torch.Tensor]] = Registry("artifact codec")


def _known_codecs() -> str:
    return ", ".join(ARTIFACT_CODECS.names()) or "(none)"


def _check_savable(name: str, codec: str) -> None:
    """Refuse to write a codec that loading would not know: the artifact could never be read back."""
    if codec not in ARTIFACT_CODECS:
        raise ArtifactError(f"tensor {name!r} is parametrized with artifact codec {codec!r}, which is not registered "
                            f"(known: {_known_codecs()}); register its decoder with "
                            f"@ARTIFACT_CODECS.register({codec!r}) before saving")


def _learned_tensors(learner: PromptLearner) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, bytes]]]:
    """(plain tensors, {name: (codec, bytes)}) under the names a learner without parametrizations uses:
    the learned tensors and those fitted to the training set (a cache model's)."""
    plain, encoded = {}, {}
    with torch.no_grad():
        for key, tensor in {**learner.learnable_tensors(), **learner.fitted_tensors()}.items():
            match = _PARAMETRIZED.fullmatch(key)
            if match is None:
                plain[key] = tensor.detach().cpu().contiguous()
                continue
            owner_name, attr = match.group(1) or "", match.group(2)
            owner = learner.get_submodule(owner_name)
            name = f"{owner_name}.{attr}" if owner_name else attr
            chain = owner.parametrizations[attr]
            if hasattr(chain[-1], "artifact_codec"):
                _check_savable(name, chain[-1].artifact_codec)
                x = chain.original
                for step in list(chain)[:-1]:
                    x = step(x)
                encoded[name] = (chain[-1].artifact_codec, chain[-1].encode(x))
            else:
                plain[name] = getattr(owner, attr).detach().cpu().contiguous()
    return plain, encoded


def config_digest(config: dict) -> str:
    """SHA-256 of config.json's content without its own digest entry, as JSON reads it back."""
    content = {k: v for k, v in json.loads(json.dumps(config)).items() if k != CONFIG_DIGEST}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_pretrained(learner: PromptLearner, directory: str | Path, metadata: dict | None = None) -> Path:
    """Write the artifact directory atomically and return its path."""
    directory = Path(directory)
    tensors, encoded = _learned_tensors(learner)
    config = {
        "format": FORMAT,
        "vlprompt_version": __version__,
        "learner": learner.name,
        "options": learner.options(),
        "backbone": learner.backbone.identity.to_dict(),
        "classnames": learner.classnames,
        "head": ({"name": learner.head.name, "options": learner.head.options(), "classnames": learner.head.trained_classes}
                 if learner.head is not None else None),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "metadata": metadata or {},
    }
    files = {}
    if tensors:
        files[TENSORS_FILE] = save(tensors)
    if encoded:
        config["encoded"] = {}
        for name, (codec, data) in encoded.items():
            file = f"{name}.{codec}"
            files[file] = data
            config["encoded"][name] = {"codec": codec, "file": file, "bytes": len(data)}
    config["sha256"] = {file: hashlib.sha256(data).hexdigest() for file, data in files.items()}
    config[CONFIG_DIGEST] = config_digest(config)
    with atomic_dir(directory, lambda d: has_format(d, CONFIG_FILE, FORMAT.split("/")[0]), "saved prompt") as tmp:
        for file, data in files.items():
            write_bytes(tmp / file, data)
        write_text(tmp / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return directory


def artifact_file(directory: str | Path, name) -> Path:
    """The path of file ``name`` of an artifact, refused unless it is a plain file inside ``directory``.

    A config.json names its files; a name that is absolute, climbs out with ``..`` or is a symlink out
    of the directory would make the loader read (and trust) a file the artifact does not hold.
    """
    directory = Path(directory)
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ArtifactError(f"{directory / CONFIG_FILE} names the file {name!r}, which is not a file name "
                            f"inside {directory}; {_RESAVE}")
    path = directory / name
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ArtifactError(f"{path} points outside the artifact {directory}; {_RESAVE}")
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; the artifact in {directory} is incomplete; {_RESAVE}")
    return path


def _checked_bytes(directory: Path, config: dict, name: str) -> bytes:
    """The bytes of artifact file ``name`` after checking them against the SHA-256 in config.json."""
    path = artifact_file(directory, name)
    data = path.read_bytes()
    expected = (config.get("sha256") or {}).get(name)
    if expected is None:
        raise ArtifactError(f"{directory / CONFIG_FILE} records no SHA-256 for {name}; {_RESAVE}")
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactError(f"{path} does not match the SHA-256 recorded in {directory / CONFIG_FILE}: the file "
                            f"was changed or damaged after saving; {_RESAVE}")
    return data


def _codec(directory: Path, name: str, codec) -> Callable[[bytes], torch.Tensor]:
    """The decoder registered for ``codec``; the name is only looked up, never imported."""
    if not isinstance(codec, str) or codec not in ARTIFACT_CODECS:
        raise ArtifactError(f"{directory / CONFIG_FILE}: tensor {name!r} uses artifact codec {codec!r}, which this "
                            f"vlprompt does not know (known: {_known_codecs()}); a codec is registered by the module "
                            f"that writes it: import that module first (the built-in codecs: vlprompt.regularizers, "
                            f"which vlprompt.from_pretrained imports), or, if the file names a wrong codec, {_RESAVE}")
    return ARTIFACT_CODECS.get(codec)


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: is {directory} a prompt saved by vlprompt (save_pretrained / vlprompt train)?")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); {_RESAVE}") from None
    if not isinstance(config, dict) or config.get("format") not in READABLE:
        found = config.get("format") if isinstance(config, dict) else None
        raise ArtifactError(f"{path} has format {found!r}; this vlprompt reads {' and '.join(map(repr, READABLE))}; "
                            f"{_RESAVE}")
    if config["format"] != READABLE[0] and config.get(CONFIG_DIGEST) != config_digest(config):
        raise ArtifactError(f"{path} does not match the SHA-256 it recorded when it was saved: it was changed or "
                            f"damaged after saving; {_RESAVE}")
    for key, kind in (("learner", str), ("options", dict), ("backbone", dict), ("classnames", list),
                      ("tensors", dict), ("encoded", dict), ("sha256", dict)):
        if not isinstance(config.get(key, {} if key == "encoded" else None), kind):
            raise ArtifactError(f"{path} lacks a valid {key!r} entry; {_RESAVE}")
    return config


def _load_tensors(directory: Path, config: dict) -> dict[str, torch.Tensor]:
    """Every learned tensor of the artifact, each file checked against its SHA-256, all values finite."""
    state = {}
    if config["tensors"]:
        data = _checked_bytes(directory, config, TENSORS_FILE)
        try:
            state = load(data)
        except Exception as exc:  # safetensors raises its own error types for a damaged header or body
            raise ArtifactError(f"{directory / TENSORS_FILE} is not a readable safetensors file "
                                f"({type(exc).__name__}: {exc}); {_RESAVE}") from None
        if {k: list(v.shape) for k, v in state.items()} != config["tensors"]:
            raise ArtifactError(f"{directory / TENSORS_FILE} holds other tensors than {directory / CONFIG_FILE} "
                                f"lists ({config['tensors']}); {_RESAVE}")
    for name, entry in config.get("encoded", {}).items():
        if not isinstance(entry, dict):
            raise ArtifactError(f"{directory / CONFIG_FILE}: encoded tensor {name!r} is not a mapping; {_RESAVE}")
        decode = _codec(directory, name, entry.get("codec"))
        data = _checked_bytes(directory, config, entry.get("file"))
        try:
            state[name] = decode(data)
        except Exception as exc:  # the codec's own errors for bytes it cannot read
            raise ArtifactError(f"{directory / entry['file']} cannot be decoded as {entry['codec']!r} "
                                f"({type(exc).__name__}: {exc}); {_RESAVE}") from None
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise ArtifactError(f"tensor {name!r} of the prompt in {directory} holds NaN or infinite values; "
                                "a prompt that diverged cannot classify; retrain it (e.g. with a lower train.lr)")
    return state


def from_pretrained(
    directory: str | Path, classnames: list[str] | None = None, backbone: Backbone | None = None
) -> PromptLearner:
    """Rebuild a learner from an artifact, for its saved classes or any other list.

    Everything is checked before it is used: files inside the directory with their recorded SHA-256,
    known codecs only, finite values. A failed check raises ``ArtifactError``.
    """
    directory = Path(directory)
    config = read_config(directory)
    state = _load_tensors(directory, config)
    try:
        wanted = BackboneIdentity.from_dict(config["backbone"])
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{directory / CONFIG_FILE} has an unreadable backbone entry ({exc}); {_RESAVE}") from None
    if backbone is None:
        backbone = load_backbone(wanted.name, None if wanted.pretrained == "random" else wanted.pretrained)
    if backbone.identity.sha256 != wanted.sha256:
        raise BackboneError(
            f"the prompt in {directory} was trained on {wanted.describe()} but the backbone given is "
            f"{backbone.identity.describe()}; load it with the backbone it was trained on"
        )
    options = LEARNERS.get(config["learner"]).Config.from_saved(config["options"]).to_dict()
    learner = build_learner(config["learner"], backbone, config["classnames"], **options)
    head = config.get("head")
    if head:  # a plug-in head (DePT's), rebuilt by its recorded name from the fixed table
        if head.get("name") not in HEADS:
            raise ArtifactError(f"{directory / CONFIG_FILE} names an unknown head {head.get('name')!r}; known heads: "
                                f"{', '.join(HEADS)}")
        learner.attach_head(HEADS[head["name"]](backbone.embed_dim, head["classnames"], **head["options"]))
    try:
        missing = learner.load_state_dict(state, strict=False).missing_keys
    except RuntimeError as exc:  # a shape that does not fit the learner its options build
        raise ArtifactError(f"the tensors in {directory} do not fit a {config['learner']} learner with options "
                            f"{config['options']} ({exc}); {_RESAVE}") from None
    absent = [k for k in {**learner.learnable_tensors(), **learner.fitted_tensors()} if k in missing]
    orphans = sorted(k for k in state if k.startswith("head.") and learner.head is None)
    if orphans:  # a head's tensors without its entry: loading them would silently drop the head
        raise ArtifactError(f"the artifact in {directory} holds head tensors {orphans[:3]} but no head entry; {_RESAVE}")
    if absent:
        raise ArtifactError(f"the artifact in {directory} lacks the tensors {absent}; {_RESAVE}")
    if classnames is not None and list(classnames) != config["classnames"]:
        learner = learner.for_classes(classnames)  # the learned tensors fit the saved classes, in their order
    return learner.eval()
