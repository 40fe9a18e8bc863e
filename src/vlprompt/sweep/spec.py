"""Sweep specs: a YAML file that expands into run plans, either a grid or a protocol.

A grid crosses ``methods`` x ``datasets`` x ``shots`` x ``seeds`` x ``ratios`` (imbalance) x every
combination of the ``grid`` overrides (key -> list of values)::

    out: runs/my-sweep           # OUT/runs holds the run directories, OUT/registry.sqlite the registry
    preset: world-demo
    overrides: [train.epochs=5]  # applied to every run
    methods: [zeroshot, coop, coop+prograd]
    datasets: ["world:objects"]
    shots: [1, 4, 16]
    seeds: [1, 2, 3]
    grid: {train.lr: [0.002, 0.01]}

A protocol spec names a registered protocol (``vlprompt list protocols``) and gives the options it
takes (``shots`` for few_shot, ``ratios`` for imbalanced, ``targets`` for the transfer protocols); it
expands exactly as ``vlprompt run PROTOCOL`` does, with the protocol's own ``plan``::

    protocol: base_to_new
    methods: [zeroshot, coop]
    datasets: ["world:objects"]
    seeds: [1, 2, 3]
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import yaml

from vlprompt.engine.config import load_preset
from vlprompt.errors import ConfigError
from vlprompt.protocols.common import (
    DEFAULT_RATIOS,
    DEFAULT_SHOTS,
    ProtocolRequest,
    RunPlan,
    as_protocol_preset,
    default_datasets,
    method_config,
)
from vlprompt.protocols.protocol import PROTOCOLS, refuse_untaken

KEYS = {"out", "preset", "overrides", "methods", "datasets", "shots", "seeds", "ratios", "grid", "protocol",
        "targets"}


def load_spec(path: str | Path, out: str | Path | None = None) -> tuple[Path, list[RunPlan]]:
    """(output folder, run plans) of the spec file at ``path``; ``out`` replaces the file's ``out``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} does not exist; write a YAML file (see `vlprompt sweep run --help`)")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep spec {path} is not valid YAML: {exc}") from exc
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep spec {path} must be a mapping of options ({', '.join(sorted(KEYS))})")
    return expand(spec, out, source=str(path))


def _list(spec: dict, key: str, default=None, cast=None, source="spec") -> list:
    value = spec.get(key, default)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if cast is not None:
        try:
            values = [cast(v) for v in values]
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {key} must be a list of {cast.__name__} values, got {value!r}") from None
    return values


def expand(spec: dict, out: str | Path | None = None, source: str = "spec") -> tuple[Path, list[RunPlan]]:
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown option {unknown[0]!r}; valid options: {', '.join(sorted(KEYS))}")
    out_dir = Path(out or spec.get("out") or "runs/sweep")
    preset = as_protocol_preset(load_preset(spec.get("preset", "world-demo")))
    overrides = [str(o) for o in _list(spec, "overrides")]
    methods = _list(spec, "methods", preset.get("methods"), str, source)
    datasets = _list(spec, "datasets", default_datasets(preset), str, source)
    seeds = _list(spec, "seeds", [1], int, source)
    if not methods or not seeds or not datasets:
        raise ConfigError(f"{source}: give at least one method, dataset and seed (methods:, datasets:, seeds:)")
    protocol = spec.get("protocol")
    if protocol is None:
        return out_dir, _grid(spec, preset, overrides, methods, datasets, seeds, out_dir, source)
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ConfigError(f"{source}: protocol {protocol!r} is not known; choose one of: "
                          f"{', '.join(PROTOCOLS.names())}")
    if "grid" in spec:
        raise ConfigError(f"{source}: grid: is for grid specs; a protocol spec takes overrides: only")
    try:
        refuse_untaken(protocol, [option for option in ("shots", "ratios", "targets") if option in spec], "{}:")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    request = ProtocolRequest(methods, seeds, spec.get("preset", "world-demo"), datasets=datasets, overrides=overrides,
                              out_dir=out_dir, shots=_list(spec, "shots", list(DEFAULT_SHOTS), int, source),
                              ratios=_list(spec, "ratios", list(DEFAULT_RATIOS), float, source),
                              targets=_list(spec, "targets", None, str, source))
    return out_dir, PROTOCOLS.get(protocol).plan(request)


def _grid(spec, preset, overrides, methods, datasets, seeds, out_dir, source) -> list[RunPlan]:
    shots = _list(spec, "shots", None, int, source) or [None]
    ratios = _list(spec, "ratios", None, float, source) or [None]
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{source}: grid must map config keys to non-empty lists, e.g. grid: {{train.lr: [0.002, 0.01]}}")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    plans = []
    for d, m, k, r, combo, s in itertools.product(datasets, methods, shots, ratios, combos, seeds):
        data = {"dataset": d}
        keys = dict(combo)
        if k is not None:
            data["shots"] = keys["shots"] = k
        if r is not None:
            data["imbalance_ratio"] = keys["ratio"] = r
        extra = [f"{key}={json.dumps(v)}" for key, v in combo.items()]  # JSON is YAML, as overrides parse
        config = method_config(m, preset, overrides + extra, data=data, train={"seed": s},
                               output_dir=str(out_dir / "runs"))
        plans.append(RunPlan(m, d, s, config, keys=keys))
    return plans
