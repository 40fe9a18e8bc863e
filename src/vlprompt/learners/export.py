"""Export a learned prompt as a plain text classifier that open_clip code can use without vlprompt.

The export is a directory with ``classifier.safetensors`` (``text_features``: the (K, D) normalised
class text features) and ``classifier.json`` (class names, backbone identity, logit scale). Logits
of an image are ``logit_scale * normalize(model.encode_image(x)) @ text_features.T``, exactly what
the learner computes, so predictions match ``vlprompt predict``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from vlprompt.version import __version__
from vlprompt.io import atomic_dir, has_format, write_bytes, write_text
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability, require

FORMAT = "vlprompt-classifier/1"
TENSORS_FILE = "classifier.safetensors"
CONFIG_FILE = "classifier.json"


def export_classifier(learner: PromptLearner, directory: str | Path, classnames: list[str] | None = None) -> Path:
    """Write the classifier of ``classnames`` (default: the learner's own classes) atomically.

    ``directory`` must be new, empty or an earlier export; any other folder is refused untouched."""
    require("export", frozenset({Capability.CLASS_CLASSIFIER}), learner.name, learner.offers,
            " (its text features depend on each image, so no fixed classifier exists)")
    classifier = learner.for_classes(classnames) if classnames else learner
    classifier.eval()
    with torch.no_grad():
        weights = classifier.text_features().float().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "vlprompt_version": __version__,
        "classnames": classifier.classnames,
        "backbone": learner.backbone.identity.to_dict(),
        "logit_scale": float(learner.backbone.logit_scale),
        "learner": learner.name,
        "usage": "logits = logit_scale * normalize(model.encode_image(images), dim=-1) @ text_features.T",
    }
    directory = Path(directory)
    with atomic_dir(directory, lambda d: has_format(d, CONFIG_FILE, FORMAT.split("/")[0]),
                    "exported classifier") as tmp:
        write_bytes(tmp / TENSORS_FILE, save({"text_features": weights}))
        write_text(tmp / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return directory
