"""The public verbs of vlprompt, re-exported by ``import vlprompt``.

    import vlprompt
    backbone = vlprompt.load_backbone("vlprompt-tiny", "world")
    method = vlprompt.create_method("coop+kgcoop", backbone, ["cat", "dog"], learner={"n_ctx": 4})
    history = vlprompt.fit(method, data, train={"epochs": 5}).history   # data: a dataset with those classes
    run = vlprompt.train("world-demo", ["learner.name=coop", "train.epochs=5"])
    metrics = vlprompt.evaluate(run.run_dir / "prompt", "world:objects")
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlprompt.backbones import Backbone, list_backbones, load_backbone
from vlprompt.data.feature_cache import FeatureCache, encode_records
from vlprompt.data.records import DatasetSplits
from vlprompt.data.sampling import few_shot, subsample_classes
from vlprompt.engine.config import (
    SECTIONS,
    LearnerConfig,
    RegularizerConfig,
    RunConfig,
    TrainConfig,
    list_presets,
    resolve_config,
    split_method,
)
from vlprompt.engine.datasets import list_datasets, resolve_dataset
from vlprompt.engine.evaluate import encode_with_learner, evaluate_features
from vlprompt.engine.method import FitResult, Method, build_method, records_features, size_text_chunk, train_method
from vlprompt.engine.run import RunResult, run_experiment
from vlprompt.engine.seeding import seed_everything
from vlprompt.errors import ConfigError
from vlprompt.learners.artifact import from_pretrained, save_pretrained
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.export import export_classifier
from vlprompt.learners.official_import import import_official
from vlprompt.learners.registry import LEARNERS, list_learners
from vlprompt.options import Options
from vlprompt.protocols.protocol import list_protocols
from vlprompt.protocols.reproduce import ReproduceSpec
from vlprompt.regularizers.composition import composition_matrix
from vlprompt.regularizers.registry import REGULARIZERS, list_regularizers

__all__ = [
    "FitResult", "Method", "RunResult", "create_method", "describe", "evaluate", "export_classifier", "fit", "from_pretrained",
    "import_official", "list_backbones", "list_datasets", "list_learners", "list_methods", "list_presets",
    "list_protocols", "list_regularizers", "load_backbone", "save_pretrained", "train",
]


def create_method(method: str, backbone: Backbone, classnames: list[str], learner: dict | None = None,
                  regularizers: dict[str, dict] | None = None, dataset_template: str | None = None) -> Method:
    """Build ``learner[+regularizer...]`` with options per part (``regularizers={"kgcoop": {"weight": 4}}``), as
    a run builds it; a combination that cannot work is refused naming the missing capability."""
    learner_name, reg_names = split_method(method)
    options = regularizers or {}
    unknown = sorted(set(options) - set(reg_names))
    if unknown:
        raise ConfigError(f"options given for {', '.join(unknown)}, which method {method!r} does not include")
    return build_method(backbone, classnames, LearnerConfig(learner_name, learner or {}),
                        [RegularizerConfig(name, options.get(name, {})) for name in reg_names], dataset_template)


def fit(method: Method, data: DatasetSplits | str, train: TrainConfig | dict | None = None, shots: int | None = 16,
        root: str | None = None, cache_dir: str | Path = "~/.cache/vlprompt") -> FitResult:
    """Train what ``create_method`` returns on ``data``'s training split, as a run trains it, and return the
    per-epoch history (losses, ``train_accuracy``); ``method.learner`` then holds the trained tensors.

    ``data`` is a dataset (``resolve_dataset``; sample it yourself) or a dataset spec such as
    ``"world:objects"``, of which ``shots`` images per class are drawn with ``train.seed`` (None: all).
    ``train`` takes the run config's ``train`` options (``vlprompt describe train``). Frozen image features
    are cached under ``cache_dir``, shared with runs.
    """
    train = train if isinstance(train, TrainConfig) else TrainConfig.from_mapping(train)
    if isinstance(data, str):
        data = resolve_dataset(data, root)
        data = few_shot(data, shots, train.seed) if shots is not None else data
    learner = method.learner
    if data.classnames != learner.classnames:
        raise ConfigError(f"the method was built for {len(learner.classnames)} classes ({_names(learner.classnames)}) "
                          f"and {data.name} has {len(data.classnames)} ({_names(data.classnames)}); build it for "
                          "the data's classes: create_method(..., data.classnames)")
    if not data.train:
        raise ConfigError(f"dataset {data.name!r} has no training images to fit on")
    seed_everything(train.seed)
    size_text_chunk(learner, train)
    cache = FeatureCache(Path(cache_dir).expanduser() / "features")
    return train_method(method, data, train, records_features(cache, learner, data, 0), dataset=data.name)


def _names(classnames: list[str]) -> str:
    return ", ".join(classnames[:3]) + (", ..." if len(classnames) > 3 else "")


def list_methods() -> dict[tuple[str, str], list[Capability]]:
    """(learner, regularizer) -> missing capabilities with default options (empty: they compose)."""
    return composition_matrix()


def train(config: RunConfig | str | None = None, overrides: list[str] = ()) -> RunResult:
    """Run (or resume, or skip when finished) one configuration: a RunConfig, or a preset name plus
    ``key=value`` overrides. Returns the run's result (``run.metrics``; ``run.run_dir / "prompt"`` is the prompt)."""
    if not isinstance(config, RunConfig):
        config = resolve_config(config, list(overrides))
    elif overrides:
        raise ConfigError("overrides apply to a preset; change the RunConfig object itself instead")
    return run_experiment(config)


def evaluate(prompt: str | Path | PromptLearner, dataset: str, root: str | None = None, subset: str = "all",
             batch_size: int = 100) -> dict:
    """Test metrics of a saved prompt (or a learner) on a dataset's test split, for its classes."""
    data = subsample_classes(resolve_dataset(dataset, root), subset)
    if isinstance(prompt, PromptLearner):
        learner = prompt.for_classes(data.classnames)
    else:
        learner = from_pretrained(prompt, classnames=data.classnames)
    if not data.test:
        raise ConfigError(f"dataset {dataset!r} has no test images to evaluate on")
    if learner.uses_image_tower:
        feats = encode_with_learner(learner, data, data.test, batch_size, desc="test features")
    else:
        feats = encode_records(learner.backbone, data, data.test, views=1, seed=0, desc="test features",
                               tokens=learner.uses_image_tokens)[0]
    labels = torch.tensor([r.label for r in data.test])
    return evaluate_features(learner, feats, labels, batch_size=batch_size)


#: the run config's typed sections, and the paper presets' ``reproduce:`` section, by the name ``describe`` takes
RUN_SECTIONS = {**SECTIONS, "protocol": ReproduceSpec}


def describe(method: str) -> str:
    """The options (type, default, doc) and capabilities of each part of ``learner[+regularizer...]``, or the
    options of a run section: ``train``, ``data``, ``backbone`` or ``protocol`` (a paper preset's ``reproduce:``)."""
    if method in RUN_SECTIONS:
        cls = RUN_SECTIONS[method]
        return _describe_part("section", cls.owner, cls, cls)
    learner_name, reg_names = split_method(method)
    lcls = LEARNERS.get(learner_name)
    lines = [_describe_part("learner", learner_name, lcls, lcls.Config)]
    lines.append("  offers: " + (", ".join(sorted(c.value for c in lcls.capabilities)) or "(nothing to train)"))
    for name in reg_names:
        rcls = REGULARIZERS.get(name)
        lines.append(_describe_part("regularizer", name, rcls, rcls.Config))
        lines.append("  requires: " + ", ".join(sorted(c.value for c in rcls.requires)))
        missing = composition_matrix()[learner_name, name]
        if missing:
            lines.append(f"  does NOT compose with {learner_name}: missing " + ", ".join(c.value for c in missing))
    return "\n".join(lines)


def _describe_part(kind: str, name: str, cls, options: type[Options]) -> str:
    """``kind name: the first paragraph of cls's docstring``, then a row per option."""
    summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    rows = options.describe()
    lines = [f"{kind} {name}" + (f": {summary}" if summary else "")]
    if not rows:
        lines.append("  (no options)")
    width = max([len(r[0]) for r in rows] + [4])
    for option, type_, default, help_ in rows:
        lines.append(f"  {option:<{width}}  {type_}  default {default}")
        if help_:
            lines.append(f"  {'':<{width}}  {help_}")
    return "\n".join(lines)
