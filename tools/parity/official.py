"""Import one file of an official implementation without its framework (Dassl, OpenAI's clip package).

Parity scripts need the official module's classes and functions, not its trainer registry, dataset
managers or model downloads. The names that a module imports from those frameworks at import time are
given as inert stand-ins, so the official code itself runs unchanged on the inputs a script gives it.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


class _Registry:
    """Stands in for Dassl's TRAINER_REGISTRY: registration leaves the class as it is."""

    def register(self, *args, **kwargs):
        return lambda cls: cls


class _Inert:
    """Stands in for a class the official module only names or subclasses (TrainerX, SimpleTokenizer)."""

    def __init__(self, *args, **kwargs):
        pass


def _not_provided(name: str):
    def call(*args, **kwargs):
        raise RuntimeError(f"the official code called {name}, which the parity script does not provide")
    return call


FRAMEWORK_NAMES = {
    "dassl": [], "dassl.engine": ["TrainerX", "SimpleTrainer"], "dassl.metrics": ["compute_accuracy"],
    "dassl.utils": ["load_pretrained_weights", "load_checkpoint", "AverageMeter", "MetricMeter", "mkdir_if_missing"],
    "dassl.optim": ["build_optimizer", "build_lr_scheduler"], "dassl.data": ["DataManager"],
    "clip": [], "clip.clip": [], "clip.simple_tokenizer": ["SimpleTokenizer"], "clip.model": [],
}


def install_framework_stand_ins(extra: dict[str, list[str]] | None = None) -> None:
    """Stand-ins for the frameworks' modules, and for ``extra`` modules of the repository itself that the
    official file imports but a parity script never calls (dataset builders, say)."""
    for name, attributes in {**FRAMEWORK_NAMES, **(extra or {})}.items():
        module = sys.modules.setdefault(name, types.ModuleType(name))
        for attribute in attributes:
            stand_in = type(attribute, (_Inert,), {}) if attribute[0].isupper() else _not_provided(attribute)
            setattr(module, attribute, stand_in)
    sys.modules["dassl.engine"].TRAINER_REGISTRY = _Registry()
    sys.modules["clip"].clip = sys.modules["clip.clip"]


def _load(name: str, path: Path):
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass the official repository's folder with --reference")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_official(path: str | Path, name: str = "official", helpers: dict[str, Path] | None = None,
                    stand_ins: dict[str, list[str]] | None = None):
    """The official file at ``path`` as a module, its framework imports served by stand-ins; ``helpers``
    maps the dotted names of the repository's own modules it imports (templates, say) to their files,
    loaded on their own so that their packages' __init__ (dataset registries) never runs; ``stand_ins``
    names further modules (and their names) to serve by inert stand-ins."""
    install_framework_stand_ins(stand_ins)
    for dotted, file in (helpers or {}).items():
        parent = dotted.rpartition(".")[0]
        if parent:
            sys.modules.setdefault(parent, types.ModuleType(parent))
        _load(dotted, Path(file))
    return _load(name, Path(path))
