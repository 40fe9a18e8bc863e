"""Regularizers by name, so configs can compose them with any learner that offers what they need.

A regularizer registers itself with ``@register_regularizer``; importing ``vlprompt.regularizers``
registers the built-in ones.
"""

from __future__ import annotations

from vlprompt.errors import ConfigError
from vlprompt.options import Options
from vlprompt.registry import Registry
from vlprompt.regularizers.base import Regularizer

REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")
register_regularizer = REGULARIZERS.register()


def list_regularizers() -> list[str]:
    return REGULARIZERS.names()


def regularizer_config(spec: dict) -> tuple[str, Options]:
    """(name, typed options) of a mapping ``{"name": ..., option: value, ...}``, validated."""
    options = dict(spec)
    name = options.pop("name", None)
    if not name:
        raise ConfigError(f"regularizer {spec!r} has no name; valid regularizers: {', '.join(list_regularizers())}")
    return name, REGULARIZERS.get(name).Config.from_mapping(options)


def build_regularizer(spec: dict) -> Regularizer:
    """Build from a mapping ``{"name": ..., option: value, ...}``."""
    name, config = regularizer_config(spec)
    return REGULARIZERS.get(name)(config)
