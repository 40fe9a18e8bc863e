"""Regularizers by name, so configs can compose them with any learner."""

from __future__ import annotations

import inspect

from vlprompt.errors import ConfigError, check_choice
from vlprompt.regularizers.base import Regularizer
from vlprompt.typecheck import check_types

REGULARIZERS: dict[str, type[Regularizer]] = {}


def register(cls: type[Regularizer]) -> type[Regularizer]:
    REGULARIZERS[cls.name] = cls
    return cls


def regularizer_options(name: str) -> dict:
    check_choice("regularizer", name, sorted(REGULARIZERS))
    params = list(inspect.signature(REGULARIZERS[name].__init__).parameters.values())[1:]
    return {p.name: p.default for p in params}


def build_regularizer(spec: dict) -> Regularizer:
    """Build from a mapping ``{"name": ..., option: value, ...}``."""
    options = dict(spec)
    name = options.pop("name")
    valid = regularizer_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"regularizer {name!r} has no option {', '.join(unknown)}; valid: {', '.join(valid)}")
    check_types(name, REGULARIZERS[name].__init__, options)
    return REGULARIZERS[name](**options)
