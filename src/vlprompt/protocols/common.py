"""What every protocol shares: method specs, run configs, executing runs, and averaging over seeds.

A method is written ``learner[+regularizer...]`` (e.g. ``coop+prograd``); its options come from the
preset's ``learners:`` and ``regularizers_defaults:`` sections. A protocol's runs are a sweep: they are
recorded in the run registry beside their run directories and finished ones are not repeated, so a
protocol can be killed and rerun.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlprompt.engine.config import RunConfig, apply_overrides, expand_preset
from vlprompt.engine.run import harmonic_mean, run_dir_of
from vlprompt.errors import ConfigError
from vlprompt.io import write_text
from vlprompt.report.tables import csv_table, markdown_table, mean_std
from vlprompt.sweep.runner import completed_results, run_sweep


@dataclass
class RunPlan:
    """One run of a protocol, with the keys its result is grouped by."""

    method: str
    dataset: str
    seed: int
    config: RunConfig
    keys: dict = field(default_factory=dict)
    protocol: str | None = None

    @property
    def run_dir(self) -> Path:
        return run_dir_of(self.config)

    @property
    def spec_id(self) -> str:
        """The run directory's name: method, dataset, seed and config hash."""
        return self.run_dir.name


def method_config(method: str, preset: dict, overrides: list[str], **sections) -> RunConfig:
    """A run config for ``method``: the preset, then the user's overrides, then the protocol's settings.

    The protocol's own settings (dataset, shots, subsets, seed, output folder) come last, and an
    override of one of them is refused: it would otherwise be dropped without a word.
    """
    learner, *regs = method.split("+")
    if not learner:
        raise ConfigError(f"method {method!r} must start with a learner name, e.g. coop or coop+prograd")
    owned = protocol_keys(sections)
    for key in (o.split("=", 1)[0].strip() for o in overrides):
        if key in owned:
            raise ConfigError(f"{key} is set by the protocol for each run and cannot be overridden; choose "
                              "datasets, shots, seeds and the output folder with the command's options "
                              "(--datasets, --targets, --shots, --ratios, --seeds, --out)")
    config = apply_overrides(preset, list(overrides))
    options = (config.get("learner") or {}).get("options") or {}
    config["learner"] = {"name": learner, "options": options}
    config["regularizers"] = [{"name": r} for r in regs]
    for section, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    epochs_override = [o for o in overrides if o.split("=", 1)[0].strip() == "train.epochs"]
    return RunConfig.from_dict(expand_preset(config, epochs_override))


def default_datasets(preset: dict) -> list[str]:
    """The datasets a protocol runs on when none are given: the preset's own, else the world's objects."""
    return [(preset.get("data") or {}).get("dataset", "world:objects")]


def protocol_keys(sections: dict) -> set[str]:
    """The dotted config keys a protocol sets, e.g. {"data.dataset", "train.seed", "output_dir"}."""
    keys = set()
    for section, values in sections.items():
        if isinstance(values, dict):
            keys.update(f"{section}.{key}" for key in values)
        else:
            keys.add(section)
    return keys


def execute(plans: list[RunPlan], workers: int = 1) -> list[dict]:
    """Run every plan as a sweep in the local pool (skipping finished ones); results in plan order."""
    return completed_results(run_sweep(plans, workers=workers))


def seed_stats(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}"


def write_tables(out_dir: Path, name: str, header: list[str], rows: list[list]) -> str:
    """Write ``name.md`` and ``name.csv`` into ``out_dir``; return the Markdown."""
    text_rows = [[str(c) for c in r] for r in rows]
    table = markdown_table(header, text_rows)
    write_text(out_dir / f"{name}.md", table)
    write_text(out_dir / f"{name}.csv", csv_table(header, text_rows))
    return table


def accuracy(result: dict, subset: str = "all") -> float:
    return result["metrics"][subset]["accuracy"]


def b_n_h(base: list[float], new: list[float]) -> tuple[float, float, float]:
    """Averaged base and new accuracy and the harmonic mean of the averages (methods.md §1.4)."""
    b = sum(base) / len(base)
    n = sum(new) / len(new)
    return b, n, harmonic_mean(b, n)
