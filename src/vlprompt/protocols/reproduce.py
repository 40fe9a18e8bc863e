"""A paper's whole protocol for one method, as its preset's ``reproduce:`` section declares it.

A paper preset holds the method's settings (``backbone``, ``learner``, ``regularizers``, ``train``) and,
read only here, what the paper ran them on::

    reproduce:
      protocol: base_to_new        # a registered protocol (`vlprompt list protocols`)
      datasets: [imagenet, caltech101, ...]   # transfer protocols: the one source (targets: its standard ones)
      seeds: [1, 2, 3]
      shots: [1, 2, 4, 8, 16]      # protocols that take shots (few_shot), which must give them
      ratios: [1, 0.25, 0.0625]    # protocols that take ratios (imbalanced), which must give them
      targets: [imagenetv2, ...]   # protocols that take targets (transfer); default: the source's standard ones
      per_dataset:                 # the paper's per-dataset rules, as key=value overrides
        imagenet: [train.epochs=50]
      source: where the protocol's datasets, seeds and rules come from

The plan and the table are the registered protocol's own (``Protocol.plan``, ``Protocol.table``); each
dataset's rules reach only its runs (``ProtocolRequest.dataset_overrides``), and the preset's regularizer
options become ``regularizers_defaults`` so that the planners, which name a method
``learner+regularizer``, keep them.
Nothing here writes: ``dry_run_text`` is the plan, which datasets are on disk, and the time the
finished runs measured.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import yaml

from vlprompt.data.datasets import DATASETS
from vlprompt.data.prepare import fix_commands
from vlprompt.data.verify import verify_dataset
from vlprompt.engine.config import load_preset
from vlprompt.engine.run import RESULTS_FILE
from vlprompt.errors import ConfigError, check_choice
from vlprompt.options import Options, option
from vlprompt.protocols.common import ProtocolRequest, RunPlan
from vlprompt.protocols.protocol import PROTOCOLS, ProtocolResult, takers_of, unique

log = logging.getLogger(__name__)

PROTOCOL_OPTIONS = ("shots", "ratios", "targets")  # what a section gives where its protocol takes it


@dataclass
class ReproduceSpec(Options):
    """A paper preset's ``reproduce:`` section: the protocol its paper ran the method under."""

    owner: ClassVar[str] = "reproduce"
    protocol: str = option("", "a registered protocol (`vlprompt list protocols`)", required=True)
    datasets: list[str] = option(factory=list, required=True,
                                 doc="the datasets trained on; transfer protocols: the source first")
    seeds: list[int] = option(factory=list, required=True, doc="the paper's seeds")
    shots: list[int] = option(factory=list, doc="few_shot only: the shot counts of the curve")
    ratios: list[float] = option(factory=list, doc="imbalanced only: the class-imbalance ratios")
    targets: list[str] = option(factory=list, doc="transfer protocols only: the datasets evaluated on (default: "
                                                  "the protocol's standard targets of the source)")
    per_dataset: dict[str, list[str]] = option(factory=dict, doc="the paper's per-dataset rules, as key=value "
                                                                 "overrides, e.g. {imagenet: [train.epochs=50]}")
    source: str = option("", "where the protocol's datasets, seeds and rules come from")

    def __post_init__(self):
        super().__post_init__()
        # each ratio becomes a run's data.imbalance_ratio, a float in its id whether the preset wrote 1 or 1.0
        self.ratios = [float(r) for r in self.ratios]

    def validate(self) -> None:
        check_choice("reproduce.protocol", self.protocol, PROTOCOLS.names())
        protocol = PROTOCOLS.get(self.protocol)
        for key in ("datasets", "seeds"):
            if not getattr(self, key):
                raise ConfigError(f"reproduce.{key} must be a non-empty list")
        for key in PROTOCOL_OPTIONS:
            given = bool(getattr(self, key))
            if given and key not in protocol.takes:
                hint = "; this preset's shots are its data.shots" if key == "shots" else ""
                raise ConfigError(f"reproduce.{key} is for the {takers_of(key)}{hint}")
            if key in protocol.needs and not given:
                raise ConfigError(f"reproduce.{key} is for the {takers_of(key)}, which needs it")
        for name, overrides in self.per_dataset.items():
            if name not in self.datasets:
                raise ConfigError(f"reproduce.per_dataset.{name}: {name!r} is not one of reproduce.datasets "
                                  f"({', '.join(self.datasets)})")
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise ConfigError(f"reproduce.per_dataset.{name} must be a list of key=value overrides")
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"reproduce.per_dataset.{name}: {bad[0]!r} is not of the form key=value")


def reproduce_spec(preset_name: str, preset: dict) -> ReproduceSpec:
    """The checked ``reproduce:`` section of ``preset``; a preset without one is refused, naming those that have."""
    section = preset.get("reproduce")
    if section is None:
        raise ConfigError(f"preset {preset_name!r} has no reproduce: section (the paper's protocol); presets that "
                          f"have one: {', '.join(reproducible_presets())}")
    if not isinstance(section, dict):
        raise ConfigError(f"preset {preset_name}: reproduce must be a mapping "
                          f"({', '.join(f.name for f in fields(ReproduceSpec))})")
    try:
        return ReproduceSpec.from_mapping(section)
    except ConfigError as exc:
        raise ConfigError(f"preset {preset_name}: {exc}") from None


def reproducible_presets() -> list[str]:
    from vlprompt.engine.config import list_presets

    return [name for name in list_presets() if "reproduce" in load_preset(name)]


def preset_method(preset: dict) -> str:
    """The method of a paper preset, ``learner[+regularizer...]``."""
    learner = (preset.get("learner") or {}).get("name", "coop")
    return "+".join([learner] + [r["name"] for r in preset.get("regularizers") or []])


@dataclass
class Reproduction:
    """The runs of one paper protocol, in the order the protocol's table reads them."""

    preset: str
    spec: ReproduceSpec
    method: str
    datasets: list[str]  # trained on
    targets: list[str]  # evaluated on too (transfer protocols)
    plans: list[RunPlan]
    out_dir: Path

    @property
    def needed(self) -> list[str]:
        """Every dataset the runs read."""
        return list(dict.fromkeys(self.datasets + self.targets))


def plan_reproduction(preset_name: str, root: str | Path, out_dir: str | Path, seeds: list[int] | None = None,
                      datasets: list[str] | None = None, shots: list[int] | None = None,
                      overrides: list[str] = ()) -> Reproduction:
    """Every run of the preset's protocol; ``seeds``, ``datasets`` and ``shots`` narrow (or replace) the paper's."""
    preset = load_preset(preset_name)
    spec = reproduce_spec(preset_name, preset)
    protocol = PROTOCOLS.get(spec.protocol)
    if shots and "shots" not in protocol.takes:
        raise ConfigError(f"--shots is for {takers_of('shots').removesuffix(' protocol')} presets; {preset_name} runs "
                          f"{spec.protocol} with its data.shots")
    spec.shots = list(shots or spec.shots)
    method = preset_method(preset)
    chosen = list(datasets or spec.datasets)
    for name in chosen + spec.targets:
        if ":" not in name:
            DATASETS.get(name)  # an unknown name is refused with the valid ones
    out_dir = Path(out_dir)
    data_root = f"data.root={Path(root).expanduser().absolute()}"
    request = ProtocolRequest([method], list(seeds or spec.seeds), preset_name, datasets=chosen,
                              overrides=[data_root, *overrides], out_dir=out_dir, shots=spec.shots,
                              ratios=spec.ratios, targets=spec.targets, dataset_overrides=spec.per_dataset)
    plans = protocol.plan(request)
    unused = [d for d in chosen if d not in {p.dataset for p in plans}]
    if unused:
        raise ConfigError(f"{spec.protocol} trains on {', '.join(unique(p.dataset for p in plans))} only; --datasets "
                          f"gave {', '.join(chosen)} (leave out {', '.join(unused)})")
    targets = unique(t for p in plans for t in p.config.data.eval_datasets)
    return Reproduction(preset_name, spec, method, chosen, targets, plans, out_dir)


def reproduction_result(rep: Reproduction, results: list[dict]) -> ProtocolResult:
    """The protocol's table of the finished runs (``results`` in plan order)."""
    protocol = PROTOCOLS.get(rep.spec.protocol)
    return ProtocolResult(protocol, protocol.table(rep.plans, results), rep.plans, results)


# --- what is on disk -------------------------------------------------------------------------------------------


@dataclass
class DataStatus:
    found: list[str]
    missing: dict[str, list[str]]  # name -> the problems verify found, then the commands that fix them

    @property
    def ok(self) -> bool:
        return not self.missing


def data_status(names: list[str], root: str | Path) -> DataStatus:
    """``vlprompt data verify`` of each standard dataset the runs read (the world's and the user's own are not
    under the root); a dataset with any problem is missing, with the ``data prepare`` lines that fix it."""
    found, missing = [], {}
    for name in names:
        if ":" in name:
            found.append(name)
            continue
        report = verify_dataset(name, root)
        if report.ok:
            found.append(name)
            continue
        problems = [f"missing {path}" for path, _ in report.missing_files[:1]]
        if report.error and not report.missing_files:
            problems.append(f"cannot read: {report.error}")
        if report.missing_images:
            problems.append(f"{len(report.missing_images)} of {report.images} listed images missing")
        if report.wrong_names:
            problems.append("its split file names classes differently from its images")
        missing[name] = problems + fix_commands(name, root)
    return DataStatus(found, missing)


# --- time from finished runs -----------------------------------------------------------------------------------


def _timing_key(config: dict) -> str:
    """A config with what does not change a run's cost per epoch removed: seed, epochs and where it lives."""
    d = copy.deepcopy(config)
    for section, key in (("train", "seed"), ("train", "epochs"), ("data", "root")):
        (d.get(section) or {}).pop(key, None)
    for key in ("output_dir", "cache_dir"):
        d.pop(key, None)
    return json.dumps(d, sort_keys=True, default=str)


@dataclass
class Measured:
    """A finished run's stages: seconds spent outside training, and seconds per training epoch."""

    fixed_s: float
    epoch_s: float


def measured_runs(folders: list[Path]) -> dict[str, list[Measured]]:
    """Timing key -> the finished runs under ``folders`` (their ``results.json`` ``timings_s`` and
    ``config.yaml``), searched as ``FOLDER/*/`` and ``FOLDER/runs/*/``."""
    found: dict[str, list[Measured]] = {}
    seen = set()
    for folder in folders:
        for results_path in sorted(folder.glob(f"*/{RESULTS_FILE}")) + sorted(folder.glob(f"runs/*/{RESULTS_FILE}")):
            run_dir = results_path.parent.resolve()
            if run_dir in seen:
                continue
            seen.add(run_dir)
            try:
                timings = json.loads(results_path.read_text()).get("timings_s") or {}
                config = yaml.safe_load((run_dir / "config.yaml").read_text())
                epochs = int(config["train"]["epochs"])
            except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
                continue  # a run folder of another kind or version: no measurement
            train_s = float(timings.get("train", 0.0))
            fixed = sum(float(v) for k, v in timings.items() if k != "train")
            found.setdefault(_timing_key(config), []).append(Measured(fixed, train_s / epochs if epochs else 0.0))
    return found


@dataclass
class Estimate:
    finished: int  # runs whose results exist
    measured_s: float  # estimated seconds of the pending runs that have a measurement
    measured_runs: int
    unknown_runs: int  # pending runs without a finished run of the same configuration (any seed or epochs)


def estimate_time(plans: list[RunPlan], folders: list[Path]) -> Estimate:
    """Each pending run's time from finished runs of the same configuration (seed and epochs aside): their
    mean seconds outside training plus their mean seconds per epoch times this run's epochs. Measured on
    the machine that ran them, one run at a time."""
    measured = measured_runs(folders)
    finished, total, known, unknown = 0, 0.0, 0, 0
    for plan in plans:
        if (plan.run_dir / RESULTS_FILE).is_file():
            finished += 1
            continue
        same = measured.get(_timing_key(plan.config.to_dict()))
        if not same:
            unknown += 1
            continue
        known += 1
        total += (sum(m.fixed_s for m in same) + sum(m.epoch_s for m in same) * plan.config.train.epochs) / len(same)
    return Estimate(finished, total, known, unknown)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def dry_run_text(rep: Reproduction, status: DataStatus, estimate: Estimate, root: str | Path,
                 workers: int = 1) -> str:
    spec = rep.spec
    shape = [f"{len(rep.datasets)} dataset(s)"]
    if spec.ratios:
        shape.append(f"{len(spec.ratios)} imbalance ratios ({', '.join(f'{r:g}' for r in spec.ratios)})")
    if spec.shots:
        shape.append(f"{len(spec.shots)} shot counts ({', '.join(map(str, spec.shots))})")
    seeds = sorted({p.seed for p in rep.plans})
    shape.append(f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))})")
    lines = [f"reproduce {rep.preset}: {spec.protocol} of {rep.method}",
             f"runs: {len(rep.plans)} = {' x '.join(shape)}; {estimate.finished} already finished in {rep.out_dir}"]
    if rep.targets:
        lines.append(f"source {rep.datasets[0]}, evaluated on: {', '.join(rep.targets)}")
    rules = {d: o for d, o in spec.per_dataset.items() if d in rep.datasets}
    for dataset, overrides in rules.items():
        lines.append(f"rule for {dataset}: {' '.join(overrides)}")
    if spec.source:
        lines.append(f"protocol source: {spec.source}")
    lines.append(f"datasets under {root}:")
    lines.append(f"  found ({len(status.found)}): {', '.join(status.found) or 'none'}")
    lines.append(f"  missing ({len(status.missing)}): {', '.join(status.missing) or 'none'}")
    for name, problems in status.missing.items():
        indent = " " * (len(name) + 6)
        lines += [f"    {name}: {problems[0]}"] + [indent + line for line in problems[1:]]
    pending = len(rep.plans) - estimate.finished
    if pending == 0:
        lines.append("time: nothing left to run")
    elif estimate.measured_runs == 0:
        lines.append(f"time: unknown for the {pending} pending runs (no finished run of the same configuration "
                     "to measure; give one with --timings-from, e.g. a finished --seeds 1 reproduction)")
    else:
        line = (f"time: about {_duration(estimate.measured_s)} for {estimate.measured_runs} of the {pending} pending "
                "runs, one at a time, from the measured time of finished runs of the same configuration")
        if workers > 1:
            line += f" (about {_duration(estimate.measured_s / workers)} with {workers} in parallel)"
        lines.append(line)
        if estimate.unknown_runs:
            lines.append(f"      unknown for the other {estimate.unknown_runs} (nothing measured for them)")
    return "\n".join(lines)
