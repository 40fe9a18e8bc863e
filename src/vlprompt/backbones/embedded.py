"""The embedded tiny CLIP: an open_clip model configuration plus weights pretrained by vlprompt.

open_clip builds it from ``model_configs/vlprompt-tiny.json`` exactly like a real model, so every code
path that serves a real backbone serves it too. The weights are produced by ``vlprompt world pretrain``.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_NAME = "vlprompt-tiny"
EMBEDDED_TAG = "world"
CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_PATH = Path(__file__).parent / "weights" / f"{EMBEDDED_NAME}.safetensors"

# The synthetic world's images are 64x64 and not photographs: their own normalisation statistics.
EMBEDDED_PREPROCESS = {
    "image_size": 64,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.25, 0.25, 0.25),
    "interpolation": "bicubic",
}


def load_embedded_state_dict(path: Path = WEIGHTS_PATH) -> dict:
    """The shipped weights as a full-precision open_clip state dict."""
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path)).items()}
