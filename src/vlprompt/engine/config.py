"""Run configuration: a YAML preset plus ``key=value`` overrides, validated into dataclasses.

Parsing validates everything that needs no model: every section's keys, each method's typed
options, and whether the learner offers what each regularizer and the evaluation plan need, so a
config that cannot work is refused before any backbone loads or any file is written.

A run is identified by the hash of its resolved configuration (output location excluded), so a
rerun of the same configuration finds its own run directory and does no work twice.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from vlprompt.backbones import text_context_length
from vlprompt.data.split_files import check_split_file
from vlprompt.engine.trainer import TrainConfig
from vlprompt.errors import ConfigError, check_choice
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import LEARNERS, learner_config
from vlprompt.options import Options
from vlprompt.regularizers.composition import check_composition, composition_matrix
from vlprompt.regularizers.registry import REGULARIZERS, regularizer_config
from vlprompt.typecheck import check_types

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
SUBSETS = ("all", "base", "new")


@dataclass
class BackboneConfig:
    name: str = "vlprompt-tiny"
    pretrained: str | None = "world"
    precision: str = "fp32"  # storage precision of the frozen towers: fp32, fp16 or bf16

    def __post_init__(self):
        check_choice("backbone.precision", self.precision, ("fp32", "fp16", "bf16"))


@dataclass
class DataConfig:
    dataset: str = "world:objects"
    root: str | None = None
    shots: int | None = 16  # None: the full training split
    subsample: str = "all"  # train on all, base or new classes
    eval_subsets: list[str] = field(default_factory=lambda: ["all"])
    # other datasets the final prompt is evaluated on with their own classes (domain shift, cross-dataset)
    eval_datasets: list[str] = field(default_factory=list)
    imbalance_ratio: float | None = None
    workers: int = 0  # DataLoader processes decoding images (0: in the main process); results do not depend on it
    # a published split: CoOp's split_zhou .json (replaces the dataset's splits) or a few-shot .jsonl (is the sample)
    split_file: str | None = None

    def __post_init__(self):
        check_choice("data.subsample", self.subsample, SUBSETS)
        for s in self.eval_subsets:
            check_choice("data.eval_subsets", s, SUBSETS)
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 0:
            raise ConfigError(f"data.workers={self.workers!r} must be a whole number >= 0 (0: decode in the main "
                              "process)")
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"data.shots={self.shots} must be at least 1 (or null for the full split)")
        if self.split_file is not None:
            check_split_file(self.split_file, self.shots)


@dataclass
class LearnerConfig:
    """A learner by name with its typed options (a mapping is validated into them)."""

    name: str = "coop"
    options: Options | dict = field(default_factory=dict)

    def __post_init__(self):
        self.options = learner_config(self.name, self.options)


@dataclass
class RegularizerConfig:
    """A regularizer by name with its typed options."""

    name: str
    options: Options | dict = field(default_factory=dict)

    def __post_init__(self):
        self.name, self.options = regularizer_config({"name": self.name, **_as_mapping(self.options)})

    @classmethod
    def from_spec(cls, spec) -> RegularizerConfig:
        """From ``{"name": ..., option: value, ...}`` as presets and overrides write it."""
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"regularizers must be a list of mappings, each with a 'name'; got {spec!r}")
        options = dict(spec)
        return cls(options.pop("name"), options)

    def to_spec(self) -> dict:
        return {"name": self.name, **self.options.to_dict()}


def _as_mapping(options) -> dict:
    return options.to_dict() if isinstance(options, Options) else dict(options or {})


@dataclass
class RunConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    regularizers: list[RegularizerConfig] = field(default_factory=list)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs"
    cache_dir: str = "~/.cache/vlprompt"

    def __post_init__(self):
        self.regularizers = [r if isinstance(r, RegularizerConfig) else RegularizerConfig.from_spec(r)
                             for r in self.regularizers]
        self._check_context_fits()
        offered = LEARNERS.get(self.learner.name).capabilities_of(self.learner.options)
        check_composition(self.learner.name, offered,
                          [(REGULARIZERS.get(r.name), r.options) for r in self.regularizers],
                          needs=self.needed_capabilities())

    def _check_context_fits(self) -> None:
        """A prompt's context leaves room in the backbone's text context for start, one class-name token, '.'
        and end (longer class names are checked when the learner tokenises them)."""
        used = self.learner.options.context_option()
        length = text_context_length(self.backbone.name)
        if used is None or length is None or used[1] <= length - 4:
            return
        option, value = used
        raise ConfigError(f"learner.options.{option}={value} does not fit the {length}-token text context of "
                          f"{self.backbone.name}: a class prompt holds start, the context, the class name, '.' "
                          f"and end; use learner.options.{option} <= {length - 4} (less for long class names)")

    def needed_capabilities(self) -> dict:
        """Capabilities the evaluation plan needs from the learner, with the reason."""
        trained_on = self.data.subsample
        other = [s for s in self.data.eval_subsets if s != trained_on]
        if other or self.data.eval_datasets:
            where = ", ".join([f"the {s} classes" for s in other] + self.data.eval_datasets)
            return {Capability.NEW_CLASSES: f" (this run trains on the {trained_on} classes and evaluates on {where})"}
        return {}

    def method(self) -> str:
        """The method as protocols write it: ``learner[+regularizer...]``."""
        return "+".join([self.learner.name] + [r.name for r in self.regularizers])

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["data"]["split_file"] is None:  # absent, as before the option existed: earlier runs keep their ids
            del d["data"]["split_file"]
        d["learner"]["options"] = self.learner.options.to_dict()
        d["regularizers"] = [r.to_spec() for r in self.regularizers]
        return d

    def run_id(self) -> str:
        """Hash of everything that determines the result (not where it is written or cached)."""
        d = self.to_dict()
        d.pop("output_dir")
        d.pop("cache_dir")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = copy.deepcopy(d)
        _check_keys("config", d, {f.name for f in fields(cls)})
        sections = {"backbone": BackboneConfig, "data": DataConfig, "learner": LearnerConfig, "train": TrainConfig}
        kwargs = {}
        for key, value in d.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{key} must be a mapping, got {value!r}")
                _check_keys(key, value, {f.name for f in fields(sections[key])})
                check_types(key, sections[key], value)
                kwargs[key] = sections[key](**value)
            elif key == "regularizers":
                if not isinstance(value, list):
                    raise ConfigError("regularizers must be a list of mappings, each with a 'name'")
                kwargs[key] = [RegularizerConfig.from_spec(r) for r in value]
            else:
                check_types("", cls, {key: value})
                kwargs[key] = value
        return cls(**kwargs)


def _check_keys(section: str, d: dict, valid: set[str]) -> None:
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ConfigError(f"unknown option {section}.{unknown[0]}; valid options of {section}: {', '.join(sorted(valid))}")


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {name!r} not found; available presets: {', '.join(list_presets())}")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"preset {path}{where}: not valid YAML ({problem}); fix it there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset {path} cannot be read ({exc})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"preset {path} holds a YAML {type(d).__name__}, not a mapping of sections; write it "
                          "as `backbone: {...}`, `data: {...}`, `learner: {...}`, `train: {...}` lines")
    return d


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML (numbers, lists, null...)."""
    d = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=5)")
        key, raw = item.split("=", 1)
        try:
            value = _parse_value(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); quote it or fix "
                              "its brackets, e.g. key='text' or key=[a, b]") from None
        node = d
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return d


def expand_preset(d: dict, overrides: list[str] = ()) -> dict:
    """Apply a preset's method-level defaults and overrides, giving a plain ``RunConfig`` dict.

    Besides ``RunConfig`` fields a preset may hold ``learners`` (options per learner name),
    ``regularizers_defaults`` (options per regularizer name or variant label), ``epochs_by_shots``
    (epochs per shot count, CoOp's schedule), ``schedules`` (train settings per learner, regularizer or
    variant label: each method trains at its own paper's schedule, a regularizer's over its learner's)
    ``methods`` (a protocol's default method list) and ``reproduce`` (the paper's protocol, read only by
    ``vlprompt reproduce``); explicit options and ``train.*`` overrides win over these defaults.
    """
    d = apply_overrides(d, list(overrides))
    _check_shapes(d)
    d.pop("methods", None)  # a protocol's default method list
    d.pop("reproduce", None)  # the paper's datasets, seeds and per-dataset rules (protocols/reproduce.py)
    learners = d.pop("learners", None) or {}
    reg_defaults = d.pop("regularizers_defaults", None) or {}
    epochs_by_shots = d.pop("epochs_by_shots", None) or {}
    schedules = d.pop("schedules", None) or {}
    learner = d.setdefault("learner", {})
    if not isinstance(learner, dict):
        raise ConfigError(f"learner must be a mapping such as {{name: coop, options: {{n_ctx: 4}}}}; got {learner!r}")
    name = learner.setdefault("name", LearnerConfig.name)
    if name not in LEARNERS:
        if name in REGULARIZERS:  # a method named by its regularizer, e.g. CLAP for zslp+clap
            hosts = [lname for (lname, rname), absent in composition_matrix().items() if rname == name and not absent]
            raise ConfigError(f"{name!r} is a regularizer, not a learner: a method is a learner plus regularizers, "
                              f"e.g. {', '.join(f'{h}+{name}' for h in hosts[:4])} (`vlprompt list methods`)")
        LEARNERS.get(name)  # the unknown-learner error, with the valid names
    options = learner.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"learner.options must be a mapping of {name}'s options; got {options!r} "
                          f"(`vlprompt describe {name}` lists them)")
    learner["options"] = {**learners.get(name, {}), **options}
    regularizers = d.get("regularizers") or []
    if not isinstance(regularizers, list) or not all(isinstance(r, dict) for r in regularizers):
        raise ConfigError(f"regularizers must be a list of mappings, each with a 'name'; got {regularizers!r}")
    d["regularizers"] = [_with_defaults(r, reg_defaults) for r in regularizers]
    overridden = {o.split("=", 1)[0].strip() for o in overrides}
    shots = (d.get("data") or {}).get("shots", DataConfig.shots)
    # shots of another type are refused when the config is parsed
    if isinstance(shots, int) and shots in epochs_by_shots and "train.epochs" not in overridden:
        d.setdefault("train", {})["epochs"] = epochs_by_shots[shots]
    parts = [name]  # the learner's schedule, then each regularizer's name, then its variant label
    for spec in regularizers:
        parts += [_with_defaults(spec, reg_defaults)["name"], spec["name"]]
    for part in dict.fromkeys(parts):
        for key, value in (schedules.get(part) or {}).items():
            if f"train.{key}" not in overridden:
                d.setdefault("train", {})[key] = value
    return d


def _check_shapes(d: dict) -> None:
    """The sections ``expand_preset`` reads must be mappings (and ``regularizers`` a list of them)."""
    mappings = ["learner", "data", "train", "learners", "regularizers_defaults", "epochs_by_shots", "schedules"]
    for key in mappings:
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise ConfigError(f"{key} must be a mapping, got {d[key]!r}")
    for section in ("learners", "regularizers_defaults", "schedules"):
        for name, value in (d.get(section) or {}).items():
            if not isinstance(value, dict):
                raise ConfigError(f"{section}.{name} must be a mapping of options, got {value!r}")
    options = (d.get("learner") or {}).get("options")
    if options is not None and not isinstance(options, dict):
        raise ConfigError(f"learner.options must be a mapping of options, got {options!r}")
    regs = d.get("regularizers")
    if regs is not None and not (isinstance(regs, list) and all(isinstance(r, dict) and "name" in r for r in regs)):
        raise ConfigError(f"regularizers must be a list of mappings, each with a 'name', got {regs!r}")


def _with_defaults(spec: dict, defaults: dict) -> dict:
    """A regularizer spec with its preset defaults. A defaults entry may carry its own ``name``: then the
    spec's name is a variant label (e.g. ``nemesis-pun`` for Nemesis with beta = 1)."""
    base = defaults.get(spec.get("name"), {})
    merged = {**base, **spec}
    merged["name"] = base.get("name", spec.get("name"))
    return merged


def _parse_value(raw: str):
    """YAML value of an override; numbers such as 1e-3 (a string to YAML 1.1) become floats."""
    value = yaml.safe_load(raw) if raw else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def resolve_config(preset: str | None = None, overrides: list[str] = ()) -> RunConfig:
    base = load_preset(preset) if preset else {}
    return RunConfig.from_dict(own_data_uses_all_classes(base, expand_preset(base, list(overrides)), overrides))


#: dataset kinds that are the user's own data, not a benchmark with a known base/new split
OWN_DATA_KINDS = ("folder:", "csv:")


def own_data_uses_all_classes(preset: dict, d: dict, overrides: list[str] = ()) -> dict:
    """A preset's class split (``data.subsample``, ``data.eval_subsets``) belongs to the dataset it names.

    When the preset names a dataset (world-demo: the world's objects) and the user puts their own
    folder or CSV in its place, training keeps all of the user's classes; a base/new split is asked
    for with ``data.subsample=base`` (and ``data.eval_subsets=[base,new]``). A preset that names no
    dataset (the paper presets) is chosen for its protocol, and its split applies to any dataset.
    ``overrides`` are the ``key=value`` items (or bare keys) chosen explicitly, which are kept.
    """
    preset_data = preset.get("data") or {}
    data = d.get("data") or {}
    dataset = str(data.get("dataset", ""))
    if "dataset" not in preset_data or not dataset.startswith(OWN_DATA_KINDS) or dataset == preset_data["dataset"]:
        return d
    keys = {o.split("=", 1)[0].strip() for o in overrides}
    reset = {key: value for key, value in (("subsample", "all"), ("eval_subsets", ["all"]))
             if f"data.{key}" not in keys and "data" not in keys and key in preset_data}
    if reset.get("subsample") and data.get("subsample", "all") != "all":
        log.info("%s is your own data: training on all its classes (the preset's data.subsample=%s is for %s; "
                 "set data.subsample=base for a base/new split)", dataset, data["subsample"], preset_data["dataset"])
    d = copy.deepcopy(d)
    d["data"].update(reset)
    return d
