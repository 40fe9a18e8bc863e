"""One registry mechanism for everything a config or the command line names: learners,
regularizers, datasets, protocols and backbones (and, in the report, figure and analysis table kinds).

A registry maps a name to an object (usually a class) and refuses unknown names with the valid
ones, so every ``name=...`` setting gets the same clear error. (The run registry of sweeps, a SQLite
file of runs, is another thing: ``sweep.registry.RunRegistry``.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from vlprompt.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (e.g. "learner"), filled by the ``register`` decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@REG.register()`` uses the entry's ``name`` attribute, ``@REG.register("x")`` names it."""

        def add(entry: T) -> T:
            key = name or getattr(entry, "name", None)
            if not key:
                raise ValueError(f"a {self.kind} needs a name to be registered")
            if key in self._entries and self._entries[key] is not entry:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = entry
            return entry

        return add

    def unregister(self, name: str) -> None:
        """Remove an entry (plugins that are unloaded, tests that register their own)."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        if name not in self._entries:
            valid = ", ".join(repr(n) for n in self.names()) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def in_registration_order(self) -> list[tuple[str, T]]:
        """(name, entry) in the order they were registered, for lookups where the first match wins."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
