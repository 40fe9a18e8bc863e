"""Prompt artifacts: a JSON config plus safetensors with only the learned tensors.

No pickles and no class-dependent buffers: the artifact reloads for any class list (class-specific
context excepted) and refuses a backbone whose weights differ from the ones it was trained on.

A learned tensor under a ``torch.nn.utils.parametrize`` parametrization is saved as the value the
model sees, under its plain name. If the last parametrization has an ``artifact_codec`` name and an
``encode(tensor) -> bytes`` method (QPrompt's quantizer), the tensor is written in that codec's own
file instead; the module that registered the codec is imported on load, so the artifact reloads
with the exact encoded values into a plain learner.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlprompt.version import __version__
from vlprompt.backbones import Backbone, BackboneIdentity, load_backbone
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.io import atomic_dir
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.registry import build_learner

CONFIG_FILE = "config.json"
TENSORS_FILE = "prompt.safetensors"
FORMAT = "vlprompt-prompt/1"

_PARAMETRIZED = re.compile(r"(?:(.+)\.)?parametrizations\.([^.]+)\.original")
#: codec name -> (decoder from the file's bytes to the tensor, module that registered it)
TENSOR_CODECS: dict[str, tuple[Callable[[bytes], torch.Tensor], str]] = {}


def register_tensor_codec(name: str, decode: Callable[[bytes], torch.Tensor]) -> None:
    """Make files written by parametrizations whose ``artifact_codec`` is ``name`` loadable."""
    TENSOR_CODECS[name] = (decode, decode.__module__)


def _learned_tensors(learner: PromptLearner) -> tuple[dict[str, torch.Tensor], dict[str, tuple[str, bytes]]]:
    """(plain tensors, {name: (codec, bytes)}) under the names a learner without parametrizations uses."""
    plain, encoded = {}, {}
    with torch.no_grad():
        for key, tensor in learner.learnable_tensors().items():
            match = _PARAMETRIZED.fullmatch(key)
            if match is None:
                plain[key] = tensor.detach().cpu().contiguous()
                continue
            owner_name, attr = match.group(1) or "", match.group(2)
            owner = learner.get_submodule(owner_name)
            name = f"{owner_name}.{attr}" if owner_name else attr
            chain = owner.parametrizations[attr]
            if hasattr(chain[-1], "artifact_codec"):
                x = chain.original
                for step in list(chain)[:-1]:
                    x = step(x)
                encoded[name] = (chain[-1].artifact_codec, chain[-1].encode(x))
            else:
                plain[name] = getattr(owner, attr).detach().cpu().contiguous()
    return plain, encoded


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
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "metadata": metadata or {},
    }
    with atomic_dir(directory) as tmp:
        if encoded:
            config["encoded"] = {}
            for name, (codec, data) in encoded.items():
                file = f"{name}.{codec}"
                (tmp / file).write_bytes(data)
                config["encoded"][name] = {"codec": codec, "module": TENSOR_CODECS[codec][1], "file": file,
                                           "bytes": os.path.getsize(tmp / file)}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if tensors:
            save_file(tensors, str(tmp / TENSORS_FILE))
    return directory


def _decode(directory: Path, name: str, entry: dict) -> torch.Tensor:
    codec, module = entry["codec"], entry.get("module", "")
    if codec not in TENSOR_CODECS and module.startswith("vlprompt."):
        importlib.import_module(module)
    if codec not in TENSOR_CODECS:
        raise ConfigError(f"tensor {name!r} in {directory} uses codec {codec!r}, which this vlprompt does not know")
    path = directory / entry["file"]
    if not path.is_file():
        raise ConfigError(f"{path} is missing; the artifact in {directory} is incomplete")
    return TENSOR_CODECS[codec][0](path.read_bytes())


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: is {directory} a prompt saved by vlprompt (save_pretrained / vlprompt train)?")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ConfigError(f"{path} has format {config.get('format')!r}; this vlprompt reads {FORMAT!r}")
    return config


def from_pretrained(
    directory: str | Path, classnames: list[str] | None = None, backbone: Backbone | None = None
) -> PromptLearner:
    """Rebuild a learner from an artifact, for its saved classes or any other list."""
    directory = Path(directory)
    config = read_config(directory)
    wanted = BackboneIdentity.from_dict(config["backbone"])
    if backbone is None:
        backbone = load_backbone(wanted.name, None if wanted.pretrained == "random" else wanted.pretrained)
    if backbone.identity.sha256 != wanted.sha256:
        raise BackboneError(
            f"the prompt in {directory} was trained on {wanted.describe()} but the backbone given is "
            f"{backbone.identity.describe()}; load it with the backbone it was trained on"
        )
    learner = build_learner(config["learner"], backbone, classnames or config["classnames"], **config["options"])
    path = directory / TENSORS_FILE
    encoded = config.get("encoded", {})
    if config["tensors"] or encoded:
        if config["tensors"] and not path.is_file():
            raise ConfigError(f"{path} is missing; the artifact in {directory} is incomplete")
        state = load_file(str(path)) if config["tensors"] else {}
        state.update({name: _decode(directory, name, entry) for name, entry in encoded.items()})
        missing = learner.load_state_dict(state, strict=False).missing_keys
        absent = [k for k in learner.learnable_tensors() if k in missing]
        if absent:
            raise ConfigError(f"{path} lacks the tensors {absent}")
    return learner.eval()
