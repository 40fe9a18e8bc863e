"""How many class prompts to encode at once when every class is its own text sequence.

Class-specific contexts, a class name in the middle or at the front, and MaPLe's deep text prompts
cannot share a prefix, so training keeps the activations of K full sequences for the backward pass.
``train.text_chunk`` encodes them in checkpointed chunks instead: a number of classes, 0 for never,
or "auto", which chunks only when an estimate of those activations exceeds ``train.text_memory_gb``.
"""

from __future__ import annotations

import math

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError

#: floats kept per token and layer for backward, in units of the width W: the block input, its two
#: layer norms, q/k/v, the attention output, the residual and the 4W MLP hidden before and after GELU
FLOATS_PER_TOKEN_LAYER = 14


def text_activation_bytes(backbone: Backbone, n_classes: int, tokens_per_class: int) -> int:
    """Estimated bytes of the text tower's saved activations for K prompts of the given length."""
    tower = backbone.text
    per_token = FLOATS_PER_TOKEN_LAYER * tower.width + tower.heads * tokens_per_class  # + attention weights
    itemsize = backbone.dtype.itemsize
    return n_classes * tokens_per_class * tower.depth * per_token * itemsize


def choose_text_chunk(setting: int | str, backbone: Backbone, n_classes: int, tokens_per_class: int,
                      budget_gb: float) -> int | None:
    """Classes per chunk for ``train.text_chunk`` (None: no chunking)."""
    if setting == "auto":
        estimate = text_activation_bytes(backbone, n_classes, tokens_per_class)
        budget = budget_gb * 2**30
        if estimate <= budget:
            return None
        return max(1, math.floor(n_classes * budget / estimate))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ConfigError(f"train.text_chunk={setting!r} is not valid; give a number of classes, 0 (never chunk) "
                          "or 'auto'")
    return setting or None
