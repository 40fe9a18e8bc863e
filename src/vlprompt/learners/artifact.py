"""Prompt artifacts: a JSON config plus safetensors with only the learned tensors.

No pickles and no class-dependent buffers: the artifact reloads for any class list (class-specific
context excepted) and refuses a backbone whose weights differ from the ones it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from vlprompt import __version__
from vlprompt.backbones import Backbone, BackboneIdentity, load_backbone
from vlprompt.errors import BackboneError, ConfigError
from vlprompt.io import atomic_dir
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.registry import build_learner

CONFIG_FILE = "config.json"
TENSORS_FILE = "prompt.safetensors"
FORMAT = "vlprompt-prompt/1"


def save_pretrained(learner: PromptLearner, directory: str | Path, metadata: dict | None = None) -> Path:
    """Write the artifact directory atomically and return its path."""
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in learner.state_dict().items()
               if k in learner.learnable_tensors()}
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
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if tensors:
            save_file(tensors, str(tmp / TENSORS_FILE))
    return directory


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
    if config["tensors"]:
        if not path.is_file():
            raise ConfigError(f"{path} is missing; the artifact in {directory} is incomplete")
        state = load_file(str(path))
        missing = learner.load_state_dict(state, strict=False).missing_keys
        absent = [k for k in learner.learnable_tensors() if k in missing]
        if absent:
            raise ConfigError(f"{path} lacks the tensors {absent}")
    return learner.eval()
