"""Typed options: one dataclass per learner, per regularizer and per section of a run config.

A method's options (and a run section's: ``backbone``, ``data``, ``train``) are declared once, as dataclass fields made with ``option(default, doc)``; the
same declaration gives the defaults, the documentation (``vlprompt describe``), type checking of
values coming from YAML or ``key=value`` overrides, and the record stored in a prompt artifact.
Range checks that need no backbone go in ``validate`` so that a bad value is refused when the run
config is parsed, before any model loads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from vlprompt.errors import ConfigError
from vlprompt.typecheck import describe, fits

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, doc: str = "", *, factory=None, required: bool = False) -> Any:
    """A documented option field; ``factory`` builds mutable defaults (lists); ``required`` marks an option
    that has a placeholder default (None) but must be set, because the paper gives no value."""
    metadata = {"doc": doc, "required": required}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Options:
    """Base of every option dataclass (methods' and run sections'); subclasses add fields and ``validate``."""

    #: the method (or run section) the options belong to, for messages ("coop", "nemesis", "train", ...)
    owner: ClassVar[str] = ""
    #: an int given for a float option becomes a float; the run's sections keep the value as written,
    #: because a run's id hashes its config as written (``train.lr=1`` and ``train.lr=1.0`` are two runs)
    widens_ints: ClassVar[bool] = True

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            converted = _convert(f"{self.owner}.{f.name}", value, hints[f.name], self.widens_ints)
            object.__setattr__(self, f.name, converted)
        self.validate()

    def validate(self) -> None:
        """Checks across fields or ranges; raise ConfigError naming the option and its valid values."""

    def context_option(self) -> tuple[str, int] | None:
        """(option, value) of the option that sets how many text tokens a class prompt spends on context
        (``n_ctx``), checked against the backbone's text context when a run config is parsed; None: none does."""
        return None

    def with_dataset_template(self, template: str | None) -> Options:
        """These options with any that refer to the dataset's hand-crafted template resolved."""
        return self

    @classmethod
    def from_mapping(cls, mapping: dict | None) -> Options:
        """Build from a plain mapping (YAML, overrides, an artifact), refusing unknown names."""
        mapping = dict(mapping or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(mapping) - set(valid))
        if unknown:
            raise ConfigError(f"{cls.owner} has no option {', '.join(unknown)}; valid options of {cls.owner}: "
                              f"{', '.join(valid) or '(none)'}")
        return cls(**mapping)

    @classmethod
    def from_saved(cls, mapping: dict | None) -> Options:
        """Build from the options an artifact recorded; a class whose rules grew stricter since an older
        vlprompt saved it maps what that version ignored to what it trained."""
        return cls.from_mapping(mapping)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(name, type, default, doc) of every option."""
        hints = typing.get_type_hints(cls)
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not _MISSING else f.default
            shown = "(required)" if default is _MISSING or f.metadata.get("required") else repr(default)
            rows.append((f.name, describe(hints[f.name]), shown, f.metadata.get("doc", "")))
        return rows


def _convert(key: str, value, tp, widen_ints: bool = True):
    """``value`` checked against the type ``tp`` (``vlprompt.typecheck``); with ``widen_ints`` an int given
    for a float option becomes a float; a tuple becomes a list."""
    if not fits(value, tp):
        raise ConfigError(f"{key}={value!r} must be {describe(tp)}")
    if widen_ints and isinstance(value, int) and not isinstance(value, bool) and not fits(value, _without_float(tp)):
        return float(value)
    return list(value) if isinstance(value, tuple) else value


def _without_float(tp):
    """``tp`` with float removed, to tell whether an int fits only as a float."""
    if tp is float:
        return type(None)
    if typing.get_origin(tp) in (Union, types.UnionType):
        kept = [a for a in typing.get_args(tp) if a is not float]
        return Union[tuple(kept)] if kept else type(None)  # noqa: UP007 (built from a runtime tuple)
    return tp


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
