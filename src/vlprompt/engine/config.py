"""Run configuration: a YAML preset plus ``key=value`` overrides, validated into typed sections.

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
from typing import ClassVar

import yaml

from vlprompt.backbones import text_context_length
from vlprompt.data.split_files import check_split_file
from vlprompt.engine.device import check_device_name
from vlprompt.engine.precision import PRECISIONS
from vlprompt.errors import ConfigError, check_choice
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import LEARNERS, learner_config
from vlprompt.options import Options, option
from vlprompt.regularizers.composition import check_composition, composition_matrix
from vlprompt.regularizers.registry import REGULARIZERS, regularizer_config
from vlprompt.typecheck import check_types

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
SUBSETS = ("all", "base", "new")


class Section(Options):
    """A section of the run config: typed, documented (``vlprompt describe train``) and checked when parsed.

    Values are kept as written (an int stays an int in a float option): the run id hashes them."""

    widens_ints: ClassVar[bool] = False


@dataclass
class BackboneConfig(Section):
    """The frozen CLIP model the prompts are learned for."""

    owner: ClassVar[str] = "backbone"
    name: str = option("vlprompt-tiny", "the model (`vlprompt list backbones`): an open_clip name such as ViT-B-16, "
                                        "RN50, or the shipped vlprompt-tiny")
    pretrained: str | None = option("world", "its weights: openai, another open_clip tag, world (the tiny model's), "
                                             "a file path, or null for random weights")
    precision: str = option("fp32", "storage precision of the frozen towers: fp32, fp16 or bf16")

    def validate(self) -> None:
        check_choice("backbone.precision", self.precision, BACKBONE_PRECISIONS)


BACKBONE_PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class DataConfig(Section):
    """What the run trains and evaluates on."""

    owner: ClassVar[str] = "data"
    dataset: str = option("world:objects", "the dataset (`vlprompt list datasets`): a benchmark name, world:TASK, "
                                           "folder:PATH or csv:PATH")
    root: str | None = option(None, "the folder holding the benchmark datasets (`vlprompt data prepare`)")
    shots: int | None = option(16, "training images per class; null: the full training split")
    subsample: str = option("all", "train on all, base or new classes (base-to-new: the first/second half)")
    eval_subsets: list[str] = option(factory=lambda: ["all"], doc="the class subsets the test split is scored on: "
                                                                  "all, base, new")
    eval_datasets: list[str] = option(factory=list, doc="other datasets the final prompt is evaluated on with their "
                                                        "own classes (domain shift, cross-dataset)")
    imbalance_ratio: float | None = option(None, "NPT's class-imbalanced sample, in (0, 1]: class k of K keeps "
                                                 "16 * ratio^(k/(K-1)) images (1: balanced); null: the shots sample")
    workers: int = option(0, "DataLoader processes decoding images (0: in the main process); results do not "
                             "depend on it")
    split_file: str | None = option(None, "a published split: CoOp's split_zhou .json (replaces the dataset's "
                                          "splits) or a few-shot .jsonl (is the sample)")

    def validate(self) -> None:
        check_choice("data.subsample", self.subsample, SUBSETS)
        for s in self.eval_subsets:
            check_choice("data.eval_subsets", s, SUBSETS)
        if self.workers < 0:
            raise ConfigError(f"data.workers={self.workers!r} must be a whole number >= 0 (0: decode in the main "
                              "process)")
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"data.shots={self.shots} must be at least 1 (or null for the full split)")
        if self.imbalance_ratio is not None and not 0 < self.imbalance_ratio <= 1:
            raise ConfigError(f"data.imbalance_ratio={self.imbalance_ratio} must be in (0, 1] (1: balanced), or null "
                              "for no imbalance")
        if self.split_file is not None:
            check_split_file(self.split_file, self.shots)


#: which epoch's tensors a run keeps: the last (CoOp's rule) or the best on the validation split (Dassl's best_val)
MODEL_SELECTION = ("last", "best_val")
OPTIMIZERS = ("sgd", "adamw", "adam")


@dataclass
class TrainConfig(Section):
    """How the prompts are trained. Defaults are the reference's (Dassl): SGD with momentum 0.9, weight decay
    5e-4, one warm-up epoch at a constant 1e-5, then a cosine schedule stepped per epoch."""

    owner: ClassVar[str] = "train"
    epochs: int = option(10, "passes over the training split")
    lr: float = option(0.002, "the learning rate of the first epoch after warm-up, lowered by a cosine per epoch")
    batch_size: int = option(32, "training images per step")
    optimizer: str = option("sgd", "sgd (Dassl's, with momentum), adamw (Tip-Adapter-F's) or adam (Dassl's, L2 in "
                                   "the gradient: TCP's); both Adams take adam_eps")
    momentum: float = option(0.9, "SGD's momentum")
    adam_eps: float = option(1e-8, "Adam's and AdamW's epsilon")
    weight_decay: float = option(5e-4, "weight decay (L2 for sgd and adam, decoupled for adamw)")
    warmup_epochs: int = option(1, "epochs at the constant warmup_lr before the schedule starts")
    warmup_lr: float = option(1e-5, "the learning rate of the warm-up epochs")
    precision: str = option("fp32", "compute precision of a step: fp32, bf16 or fp16 (with loss scaling)")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps (auto: CUDA when present)")
    text_chunk: int | str = option("auto", "classes per checkpointed text chunk where prompts share no prefix; "
                                           "0: never; auto: as text_memory_gb allows")
    text_memory_gb: float = option(2.0, "the activation budget that text_chunk=auto keeps to")
    seed: int = option(1, "seed of the few-shot sample, the initial prompts and the batch order")
    views: int = option(1, "augmented views of each training image whose frozen features are cached")
    eval_batch_size: int = option(100, "images per evaluation and validation batch (a memory setting)")
    model_selection: str = option("last", "last (CoOp's rule) or best_val (the epoch with the best validation "
                                          "accuracy)")

    def validate(self) -> None:
        check_choice("train.precision", self.precision, PRECISIONS)
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("train.model_selection", self.model_selection, MODEL_SELECTION)
        if not self.adam_eps > 0:
            raise ConfigError(f"train.adam_eps={self.adam_eps} must be positive")
        check_device_name(self.device)
        if not (self.text_chunk == "auto" or (isinstance(self.text_chunk, int) and self.text_chunk >= 0)):
            raise ConfigError(f"train.text_chunk={self.text_chunk!r} is not valid; give a number of classes, "
                              "0 (never chunk) or 'auto'")
        if not self.text_memory_gb > 0:
            raise ConfigError(f"train.text_memory_gb={self.text_memory_gb} must be positive")
        for name in ("epochs", "batch_size", "views", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be at least 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr} must be positive")
        for name in ("momentum", "weight_decay", "warmup_epochs", "warmup_lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}={getattr(self, name)} must not be negative")


#: the run config's sections that are typed options, by name (``vlprompt describe train``)
SECTIONS: dict[str, type[Section]] = {"backbone": BackboneConfig, "data": DataConfig, "train": TrainConfig}


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
        sections = {**SECTIONS, "learner": LearnerConfig}
        kwargs = {}
        for key, value in d.items():
            if key in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{key} must be a mapping, got {value!r}")
                _check_keys(key, value, {f.name for f in fields(sections[key])})
                if key == "learner":
                    check_types(key, LearnerConfig, value)
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


def split_method(method: str) -> tuple[str, list[str]]:
    """``"coop+prograd+kgcoop"`` -> ("coop", ["prograd", "kgcoop"])."""
    learner, *regularizers = [part.strip() for part in method.split("+")]
    if not learner:
        raise ConfigError(f"method {method!r} must start with a learner name, e.g. coop or coop+prograd")
    return learner, regularizers


def expand_preset(preset: dict, overrides: list[str] = (), *, method: str | None = None,
                  fixed: dict | None = None) -> dict:
    """The preset language's precedence, in the one place it is applied: a plain ``RunConfig`` dict.

    ``vlprompt train`` calls it with a preset and the user's ``key=value`` overrides; every protocol
    (``protocols.common.method_config``) also passes the ``method`` of the run (``learner[+regularizer...]``,
    replacing the preset's learner name and regularizer list) and its ``fixed`` settings (dataset, shots,
    seed, output folder: ``{"data": {...}, "train": {...}, "output_dir": ...}``). From lowest to highest:

    1. each section's defaults (``vlprompt describe train``, ``data``, ``backbone``);
    2. the preset's method-level defaults: ``learners.<learner>`` (options), ``regularizers_defaults.<name>``
       (options of a regularizer or of a variant label that names its regularizer);
    3. the preset's own sections (``backbone``, ``data``, ``learner``, ``regularizers``, ``train``);
    4. the preset's schedules, over its ``train`` section: ``epochs_by_shots[data.shots]`` for
       ``train.epochs``, then ``schedules.<learner>``, ``schedules.<regularizer>``, ``schedules.<label>``;
    5. the user's overrides (any key; a ``train.*`` override also wins over every schedule);
    6. the protocol's ``method`` and ``fixed`` settings; an override of a fixed key is refused, since it
       would otherwise be dropped without a word.

    Last, the own-data rule (``own_data_uses_all_classes``): a folder or CSV put in place of the dataset the
    preset names does not inherit that dataset's class split. ``methods`` and ``reproduce`` (read by the
    protocols and ``vlprompt reproduce``) are dropped.
    """
    overrides, fixed = list(overrides), dict(fixed or {})
    fixed_keys = _dotted_keys(fixed)
    for key in (o.split("=", 1)[0].strip() for o in overrides):
        if key in fixed_keys:
            raise ConfigError(f"{key} is set by the protocol for each run and cannot be overridden; choose "
                              "datasets, shots, seeds and the output folder with the command's options "
                              "(--datasets, --targets, --shots, --ratios, --seeds, --out)")
    d = apply_overrides(preset, overrides)
    _check_shapes(d)
    if method is not None:
        learner_name, regularizer_names = split_method(method)
        d["learner"] = {"name": learner_name, "options": (d.get("learner") or {}).get("options") or {}}
        d["regularizers"] = [{"name": r} for r in regularizer_names]
    for section, values in fixed.items():
        if isinstance(values, dict):
            d.setdefault(section, {}).update(values)
        else:
            d[section] = values
    d.pop("methods", None)  # a protocol's default method list
    d.pop("reproduce", None)  # the paper's datasets, seeds and per-dataset rules (protocols/reproduce.py)
    learners = d.pop("learners", None) or {}
    reg_defaults = d.pop("regularizers_defaults", None) or {}
    epochs_by_shots = d.pop("epochs_by_shots", None) or {}
    schedules = d.pop("schedules", None) or {}
    learner = d.setdefault("learner", {})
    name = learner.setdefault("name", LearnerConfig.name)
    _check_learner_name(name)
    options = learner.get("options") or {}
    learner["options"] = {**learners.get(name, {}), **options}
    regularizers = d.get("regularizers") or []
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
    return own_data_uses_all_classes(preset, d, overrides + sorted(fixed_keys))


def _dotted_keys(sections: dict) -> set[str]:
    """The dotted config keys of ``{"data": {"dataset": ...}, "output_dir": ...}``: data.dataset, output_dir."""
    keys = set()
    for section, values in sections.items():
        if isinstance(values, dict):
            keys.update(f"{section}.{key}" for key in values)
        else:
            keys.add(section)
    return keys


def _check_learner_name(name) -> None:
    """An unknown learner is refused with the valid names; a regularizer given as one, with its methods."""
    if name in LEARNERS:
        return
    if name in REGULARIZERS:  # a method named by its regularizer, e.g. CLAP for zslp+clap
        hosts = [lname for (lname, rname), absent in composition_matrix().items() if rname == name and not absent]
        raise ConfigError(f"{name!r} is a regularizer, not a learner: a method is a learner plus regularizers, "
                          f"e.g. {', '.join(f'{h}+{name}' for h in hosts[:4])} (`vlprompt list methods`)")
    LEARNERS.get(name)  # the unknown-learner error, with the valid names


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
    """The run config of a preset (name or .yaml path) and ``key=value`` overrides (see ``expand_preset``)."""
    return RunConfig.from_dict(expand_preset(load_preset(preset) if preset else {}, list(overrides)))


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
