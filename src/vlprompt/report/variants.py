"""Runs that fill the same table cell with different settings are variants, not extra seeds.

A registry folder collects the runs of every command pointed at it. Two finished runs with the same
protocol, dataset, method, protocol keys (shots, ratio...) and seed but another config (an override such
as ``train.epochs=50``, or an option that a newer vlprompt records and an older one did not) would be
pooled by the tables as if they were more seeds of one method: a wrong mean, a wrong spread and a wrong
seed count. The report labels each such method with the settings that tell its variants apart, e.g.
``coop [train.epochs=50]`` beside ``coop [train.epochs=200]``, so every table, curve and count keeps
them apart; a method whose runs all agree keeps its plain name.
"""

from __future__ import annotations

import json
from dataclasses import replace

from vlprompt.sweep.registry import Row

#: where a run is written and its seed: settings in which the runs of one table cell are meant to differ
NOT_SETTINGS = ("output_dir", "cache_dir", "train.seed")


def settings_of(config: dict, prefix: str = "") -> dict[str, str]:
    """A run config flattened to dotted settings (``train.epochs``), each value as JSON text."""
    flat = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(settings_of(value, f"{dotted}."))
        elif dotted not in NOT_SETTINGS:
            flat[dotted] = json.dumps(value, sort_keys=True)
    return flat


def _cell(row: Row) -> tuple:
    return row.protocol, row.dataset, row.method, json.dumps(row.keys, sort_keys=True)


def _shown(setting: str, value: str | None) -> str:
    if value is None:
        return f"{setting} unset"
    decoded = json.loads(value)
    return f"{setting}={decoded if isinstance(decoded, str) else value}"


def label_variants(rows: list[Row]) -> list[Row]:
    """``rows`` with the method of every variant labelled by the settings that differ between the finished
    runs of one cell (gathered over all cells of that protocol, dataset and method, so a curve keeps one
    label per variant across shots); rows without a config (a folder of bare results) are left as they are."""
    done = [r for r in rows if r.state == "done" and r.config]
    settings = {r.spec_id: settings_of(r.config) for r in done}
    cells: dict[tuple, list[dict]] = {}
    for r in done:
        cells.setdefault(_cell(r), []).append(settings[r.spec_id])
    telling: dict[tuple, set[str]] = {}
    for cell, found in cells.items():
        names = {name for s in found for name in s}
        differing = {name for name in names if len({s.get(name) for s in found}) > 1}
        if differing:
            telling.setdefault(cell[:3], set()).update(differing)
    labelled = []
    for r in rows:
        names = sorted(telling.get(_cell(r)[:3], ()))
        if names and r.config:
            own = settings.get(r.spec_id) or settings_of(r.config)
            r = replace(r, method=f"{r.method} [{', '.join(_shown(n, own.get(n)) for n in names)}]")
        labelled.append(r)
    return labelled
