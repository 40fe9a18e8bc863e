"""Whether a learner and a list of regularizers make one method, decided from capabilities alone.

Used when a run config is parsed (before any backbone loads), by the trainer for objects built in
Python, and by ``vlprompt.list_methods`` for the matrix (``vlprompt list methods`` prints the same
matrix from ``cli/catalog.py``, data that a test checks against these classes).
"""

from __future__ import annotations

from vlprompt.errors import ConfigError
from vlprompt.learners.capabilities import Capability, missing_capabilities, require
from vlprompt.learners.registry import LEARNERS
from vlprompt.options import Options
from vlprompt.regularizers.base import Regularizer
from vlprompt.regularizers.registry import REGULARIZERS


def check_composition(learner: str, offered: frozenset[Capability],
                      regularizers: list[tuple[type[Regularizer], Options]],
                      needs: dict[Capability, str] | None = None) -> None:
    """Refuse a method whose learner (offering ``offered``) lacks a capability that a regularizer
    (class and options) or the run ``needs`` (capability -> why)."""
    for cls, options in regularizers:
        require(f"regularizer {cls.name!r}", cls.requirements(options), learner, offered)
    names = [cls.name for cls, _ in regularizers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"regularizer {duplicates[0]!r} is listed twice; give each regularizer once")
    gradient = [cls.name for cls, _ in regularizers if cls.wants_loss_gradients]
    if len(gradient) > 1:
        raise ConfigError(f"at most one gradient-transforming regularizer per run; got {', '.join(gradient)}")
    for capability, why in (needs or {}).items():
        require("this run", frozenset({capability}), learner, offered, why)


def composition_matrix() -> dict[tuple[str, str], list[Capability]]:
    """(learner, regularizer) -> the capabilities missing with default options (empty: they compose)."""
    return {(lname, rname): missing_capabilities(rcls.requires, lcls.capabilities)
            for lname, lcls in LEARNERS.items() for rname, rcls in REGULARIZERS.items()}
