"""Export a learned prompt as a plain text classifier that open_clip code can use without vlprompt.

The export is a directory with ``classifier.safetensors`` (``text_features``: the (K, D) normalised
class text features) and ``classifier.json`` (class names, backbone identity, logit scale). Logits
of an image are ``logit_scale * normalize(model.encode_image(x)) @ text_features.T``, exactly what
the learner computes, so predictions match ``vlprompt predict``. A backbone that open_clip cannot build
by itself (the embedded ``vlprompt-tiny``) travels along in ``backbone/``, in open_clip's ``local-dir``
format, so the export serves code without vlprompt in every case.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from vlprompt.backbones import open_clip_knows, save_open_clip_dir
from vlprompt.io import atomic_dir, has_format, write_bytes, write_text
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability, require
from vlprompt.version import __version__

FORMAT = "vlprompt-classifier/1"
TENSORS_FILE = "classifier.safetensors"
CONFIG_FILE = "classifier.json"
#: the plain formula reproduces the learner's logits exactly when both hold
EXPORT_NEEDS = frozenset({Capability.CLASS_CLASSIFIER, Capability.FIXED_IMAGE_FEATURES})
BACKBONE_DIR = "backbone"


def export_classifier(learner: PromptLearner, directory: str | Path, classnames: list[str] | None = None) -> Path:
    """Write the classifier of ``classnames`` (default: the learner's own classes) atomically.

    ``directory`` must be new, empty or an earlier export; any other folder is refused untouched."""
    require("export", EXPORT_NEEDS, learner.name, learner.offers,
            " (plain open_clip code scores an image by its frozen image feature and one class matrix)")
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
    standalone = not open_clip_knows(learner.backbone.identity)
    if standalone:  # the folder, beside this file, that open_clip builds the backbone from
        meta["open_clip_backbone"] = BACKBONE_DIR
        meta["usage"] += f"; model = open_clip.create_model_and_transforms('local-dir:EXPORT/{BACKBONE_DIR}')[0]"
    directory = Path(directory)
    with atomic_dir(directory, lambda d: has_format(d, CONFIG_FILE, FORMAT.split("/")[0]),
                    "exported classifier") as tmp:
        write_bytes(tmp / TENSORS_FILE, save({"text_features": weights}))
        if standalone:
            save_open_clip_dir(learner.backbone, tmp / BACKBONE_DIR)
        write_text(tmp / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return directory
