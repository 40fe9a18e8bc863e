"""The embedded tiny CLIP: an open_clip model configuration plus weights pretrained by vlprompt.

open_clip builds it from ``model_configs/vlprompt-tiny.json`` exactly like a real model, so every code
path that serves a real backbone serves it too. The weights are produced by ``vlprompt world pretrain``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from vlprompt.registry import Registry

EMBEDDED_NAME = "vlprompt-tiny"
EMBEDDED_TAG = "world"
CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_PATH = Path(__file__).parent / "weights" / f"{EMBEDDED_NAME}.safetensors"
VOCAB_SIZE = 49408

# The synthetic world's images are 64x64 and not photographs: their own normalisation statistics.
EMBEDDED_PREPROCESS = {
    "image_size": 64,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.25, 0.25, 0.25),
    "interpolation": "bicubic",
}


# The token embedding is initialised from this seed; only rows that training changed are shipped.
TOKEN_EMBEDDING_SEED = 20_241_123


def token_embedding_init(shape: tuple[int, int]) -> torch.Tensor:
    """The seeded N(0, 0.02^2) initial token embedding (open_clip's init scale)."""
    generator = torch.Generator().manual_seed(TOKEN_EMBEDDING_SEED)
    return torch.randn(tuple(shape), generator=generator) * 0.02


def load_embedded_state_dict(path: Path = WEIGHTS_PATH) -> dict:
    """The shipped weights as a full open_clip state dict: the token embedding is rebuilt from its
    seeded initial values with the stored rows written over them."""
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    rows, values = state.pop("token_embedding.rows").long(), state.pop("token_embedding.values")
    embedding = token_embedding_init((VOCAB_SIZE, values.shape[1]))
    embedding[rows] = values
    state["token_embedding.weight"] = embedding
    return state


def is_embedded_weights_file(path: str | Path) -> bool:
    """True for a safetensors file in the shipped format (token-embedding rows stored separately)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return "token_embedding.rows" in f.keys()


@dataclass(frozen=True)
class ShippedBackbone:
    """A model that vlprompt ships itself: an open_clip config in ``model_configs/`` plus weights in a
    format of its own, reachable by tag (``weights``) or as a file that ``is_weights_file`` recognises;
    ``default`` is the tag its name alone loads."""

    name: str
    weights: dict[str, Path]
    preprocess: dict
    load_state_dict: Callable[[Path], dict]
    is_weights_file: Callable[[str | Path], bool]
    default: str | None = None


#: backbones beyond open_clip's pretrained tags, by model name
BACKBONES: Registry[ShippedBackbone] = Registry("backbone")
register_backbone = BACKBONES.register()

register_backbone(ShippedBackbone(EMBEDDED_NAME, {EMBEDDED_TAG: WEIGHTS_PATH}, EMBEDDED_PREPROCESS,
                                  load_embedded_state_dict, is_embedded_weights_file, default=EMBEDDED_TAG))
