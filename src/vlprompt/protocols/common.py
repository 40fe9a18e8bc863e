"""What every protocol shares: the request, method specs, run configs, executing runs and averaging
over seeds (``protocol.py`` says what a protocol is and keeps the registry of them).

A method is written ``learner[+regularizer...]`` (e.g. ``coop+prograd``); its options come from the
preset's ``learners:`` and ``regularizers_defaults:`` sections. Runs whose results exist are not
repeated (``run_experiment`` finds them by config hash), so a protocol can be killed and rerun. How
the runs execute is the request's ``executor``: one after the other here by default; the command
line passes the sweep layer's, which records them in the run registry and runs them in a pool or on
Ray (protocols sit below sweep/ and never import it).

Building tables needs none of the engine: a table reads ``RunKey``s and results, so the report rebuilds
tables from registry rows without importing model code; the engine is imported only where runs are
planned or executed.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vlprompt.errors import ConfigError
from vlprompt.metrics import harmonic_mean
from vlprompt.progress import Progress

if TYPE_CHECKING:
    from vlprompt.engine.config import RunConfig

DEFAULT_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_RATIOS = (1.0, 0.25, 0.0625)  # the class-imbalance ratios of NPT's table (methods.md §10.6)


@dataclass
class ProtocolRequest:
    """What the user asked a protocol to run; each protocol reads the fields it uses."""

    methods: list[str]
    seeds: list[int]
    preset: str
    datasets: list[str] = field(default_factory=list)  # default: the preset's dataset
    overrides: list[str] = field(default_factory=list)
    out_dir: Path = Path("runs")
    workers: int = 1
    shots: list[int] = field(default_factory=lambda: list(DEFAULT_SHOTS))
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    targets: list[str] = field(default_factory=list)  # default: the protocol's standard targets
    #: dataset -> key=value overrides of that dataset's runs only, before ``overrides`` (a paper's rules)
    dataset_overrides: dict[str, list[str]] = field(default_factory=dict)
    #: runs the plans and returns their results in plan order (default: ``run_in_order``)
    executor: Callable[[list[RunPlan], int], list[dict]] | None = None

    def __post_init__(self):
        if not self.methods or not self.seeds:
            raise ConfigError("give at least one method and one seed")
        from vlprompt.engine.config import load_preset

        self.preset_dict = as_protocol_preset(load_preset(self.preset))
        self.datasets = list(self.datasets) or default_datasets(self.preset_dict)

    def overrides_for(self, dataset: str) -> list[str]:
        """The overrides of ``dataset``'s runs: its own rules, then those of every run, which win."""
        return [*self.dataset_overrides.get(dataset, []), *self.overrides]


def run_in_order(plans: list[RunPlan], workers: int = 1) -> list[dict]:
    """The default executor: every plan in this process, one after the other, finished ones skipped."""
    from vlprompt.engine.run import run_experiment

    return [run_experiment(p.config).results for p in Progress(plans, "runs", unit="run")]


@dataclass
class RunKey:
    """Which run: method, dataset, seed, the keys its result is grouped by and its protocol; all a protocol's
    tables read of a run besides its results, so the report builds these from registry rows alone."""

    method: str
    dataset: str
    seed: int
    keys: dict = field(default_factory=dict, kw_only=True)
    protocol: str | None = field(default=None, kw_only=True)


@dataclass
class RunPlan(RunKey):
    """One run of a protocol: its key and the config it runs with."""

    config: RunConfig

    @property
    def run_dir(self) -> Path:
        from vlprompt.engine.run import run_dir_of

        return run_dir_of(self.config)

    @property
    def spec_id(self) -> str:
        """The run directory's name: method, dataset, seed and config hash."""
        return self.run_dir.name


def method_config(method: str, preset: dict, overrides: list[str], **sections) -> RunConfig:
    """A run config for ``method``: the preset, then the user's overrides, then the protocol's own settings
    (``sections``: dataset, shots, subsets, seed, output folder), in ``expand_preset``'s precedence."""
    from vlprompt.engine.config import RunConfig, expand_preset

    return RunConfig.from_dict(expand_preset(preset, overrides, method=method, fixed=sections))


def as_protocol_preset(preset: dict) -> dict:
    """The preset as the planners read it: the options of each regularizer a paper preset lists go under
    ``regularizers_defaults`` (a method names its regularizers, which take their options from there, so
    ``coop+nemesis`` on a Nemesis preset keeps its beta and omega); the ``reproduce:`` section is dropped."""
    d = copy.deepcopy(preset)
    d.pop("reproduce", None)
    defaults = d.setdefault("regularizers_defaults", {})
    for spec in d.pop("regularizers", None) or []:
        options = {k: v for k, v in spec.items() if k != "name"}
        defaults[spec["name"]] = {**defaults.get(spec["name"], {}), **options}
    return d


def default_datasets(preset: dict) -> list[str]:
    """The datasets a protocol runs on when none are given: the preset's own, else the world's objects."""
    return [(preset.get("data") or {}).get("dataset", "world:objects")]


def execute(plans: list[RunPlan], request: ProtocolRequest) -> list[dict]:
    """Run every plan with the request's executor; results in plan order."""
    from vlprompt.engine.inputs import check_writable_folder

    check_writable_folder("--out", str(request.out_dir))  # before the executor writes its registry there
    return (request.executor or run_in_order)(plans, request.workers)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed), as the reference's parser reports."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def seed_stats(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}"


def accuracy(result: dict, subset: str = "all") -> float:
    return result["metrics"][subset]["accuracy"]


def b_n_h(base: list[float], new: list[float]) -> tuple[float, float, float]:
    """Averaged base and new accuracy and the harmonic mean of the averages (methods.md §1.4)."""
    b = sum(base) / len(base)
    n = sum(new) / len(new)
    return b, n, harmonic_mean(b, n)
