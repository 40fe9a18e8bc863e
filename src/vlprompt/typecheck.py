"""Values from YAML and ``key=value`` overrides checked against the annotated type they are meant for.

A config value of the wrong type (``train.epochs=abc``, ``learner.options.ctx_init=1``) would otherwise
surface as a TypeError deep inside the code that uses it; checked here, it is a ConfigError that names
the option and the type it needs. The annotations of the dataclasses and of the learner and regularizer
constructors are the specification.
"""

from __future__ import annotations

import math
import types
import typing

from vlprompt.errors import ConfigError


def fits(value, hint) -> bool:
    """Whether ``value`` (as YAML gives it) is of type ``hint``; ints pass as floats, floats must be finite."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value) if args else isinstance(value, list)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(origin or hint, type):
        return isinstance(value, origin or hint)
    return True  # an annotation this checker does not model: left to the code that uses the value


def describe(hint) -> str:
    """``a whole number or null``, ``a list of strings``..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is list and args:
        return f"a list of {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {type(None): "null", int: "a whole number", float: "a finite number", str: "a string",
             dict: "a mapping", bool: "true or false", list: "a list"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_types(prefix: str, annotated, values: dict) -> None:
    """Raise a ConfigError naming ``prefix.key`` for the first value whose type does not fit the annotation
    of ``key`` in ``annotated`` (a dataclass or a function); keys without annotation are not checked."""
    hints = typing.get_type_hints(annotated)
    for key, value in values.items():
        if key in hints and not fits(value, hints[key]):
            option = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{option}={value!r} must be {describe(hints[key])}")
