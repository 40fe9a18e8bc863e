"""The protocols' standard tables and figures rebuilt from registry rows, with the protocols' own functions.

Rows are grouped by protocol (and, for transfer, by source and targets); a table needs every
(dataset, method, setting) of its group finished, otherwise the section says which are missing.
Rows of grid sweeps (no protocol) get one generic table: mean ± std over seeds per subset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vlprompt.engine.config import RunConfig
from vlprompt.protocols.base_to_new import base_new_accuracies, base_new_means, base_to_new_table, told_accuracies
from vlprompt.protocols.common import RunPlan, seed_stats
from vlprompt.protocols.few_shot import few_shot_table
from vlprompt.protocols.transfer import transfer_table
from vlprompt.report.figures import plot_base_to_new, plot_few_shot
from vlprompt.sweep.registry import Row

TITLES = {"few_shot": "Few-shot classification", "base_to_new": "Base-to-new generalisation",
          "imbalanced": "Class-imbalanced base-to-new", "domain_generalization": "Domain generalisation",
          "cross_dataset": "Cross-dataset transfer", None: "Runs"}


@dataclass
class Table:
    title: str
    name: str  # file stem of its CSV and figure
    header: list[str]
    rows: list[list]
    footer: list[list] = field(default_factory=list)  # average rows, kept below when sorting
    figure: Path | None = None
    missing: list[str] = field(default_factory=list)


def unique(values) -> list:
    return list(dict.fromkeys(values))


def _plans(rows: list[Row]) -> list[RunPlan]:
    return [RunPlan(r.method, r.dataset, r.seed, RunConfig.from_dict(r.config), keys=r.keys, protocol=r.protocol)
            for r in rows]


def _missing(rows: list[Row], methods, datasets, settings) -> list[str]:
    have = {(r.dataset, r.method, json.dumps(r.keys, sort_keys=True)) for r in rows}
    return [f"{m} on {d} ({s})" for d in datasets for m in methods for s in settings
            if (d, m, s) not in have]


def _split_average(rows: list[list]) -> tuple[list[list], list[list]]:
    return [r for r in rows if r[0] != "Average"], [r for r in rows if r[0] == "Average"]


def protocol_tables(rows: list[Row], figure_dir: Path) -> list[Table]:
    done = [r for r in rows if r.state == "done"]
    tables = []
    for protocol in unique(r.protocol for r in done):
        mine = [r for r in done if r.protocol == protocol]
        if protocol in ("domain_generalization", "cross_dataset"):
            for source, targets in unique((r.dataset, tuple(r.config["data"]["eval_datasets"])) for r in mine):
                group = [r for r in mine if r.dataset == source and tuple(r.config["data"]["eval_datasets"]) == targets]
                tables.append(_transfer(protocol, group, source, list(targets)))
        elif protocol == "imbalanced":
            for ratio in unique(r.keys["ratio"] for r in mine):
                tables.append(_base_to_new([r for r in mine if r.keys["ratio"] == ratio], figure_dir,
                                           f"imbalanced_{ratio:g}", f"{TITLES[protocol]}, ratio {ratio:g}"))
        elif protocol == "base_to_new":
            tables.append(_base_to_new(mine, figure_dir, "base_to_new", TITLES[protocol]))
        elif protocol == "few_shot":
            tables.append(_few_shot(mine, figure_dir))
        else:
            tables.append(_grid(mine))
    return tables


def _few_shot(rows: list[Row], figure_dir: Path) -> Table:
    methods, datasets = unique(r.method for r in rows), unique(r.dataset for r in rows)
    shots = sorted(unique(r.keys["shots"] for r in rows))
    table = Table(TITLES["few_shot"], "few_shot", [], [],
                  missing=_missing(rows, methods, datasets, [json.dumps({"shots": k}) for k in shots]))
    if not table.missing:
        header, body, panels = few_shot_table(_plans(rows), [r.results for r in rows], methods, datasets, shots)
        table.header, (table.rows, table.footer) = header, _split_average(body)
        table.figure = plot_few_shot(panels, shots, figure_dir / "few_shot.png")
    return table


def _base_to_new(rows: list[Row], figure_dir: Path, name: str, title: str) -> Table:
    methods, datasets = unique(r.method for r in rows), unique(r.dataset for r in rows)
    table = Table(title, name, [], [], missing=_missing(rows, methods, datasets, unique(
        json.dumps(r.keys, sort_keys=True) for r in rows)))
    if not table.missing:
        plans, results = _plans(rows), [r.results for r in rows]
        accuracies = base_new_accuracies(plans, results, methods, datasets)
        header, body = base_to_new_table(accuracies, methods, datasets,
                                         told_accuracies(plans, results, methods, datasets))
        table.header, (table.rows, table.footer) = header, _split_average(body)
        table.figure = plot_base_to_new(base_new_means(accuracies, methods, datasets), figure_dir / f"{name}.png")
    return table


def _transfer(protocol: str, rows: list[Row], source: str, targets: list[str]) -> Table:
    methods = unique(r.method for r in rows)
    header, body = transfer_table(_plans(rows), [r.results for r in rows], methods, source, targets)
    return Table(f"{TITLES[protocol]} from {source}", f"{protocol}_{_safe(source)}", header, body)


def _grid(rows: list[Row]) -> Table:
    """Mean ± std over seeds of every evaluated subset, per (dataset, method, setting)."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.method, json.dumps(r.keys, sort_keys=True)), []).append(r)
    subsets = unique(s for r in rows for s, m in r.results["metrics"].items() if isinstance(m, dict) and "accuracy" in m)
    body = []
    for (dataset, method, keys), group in groups.items():
        setting = ", ".join(f"{k}={v}" for k, v in json.loads(keys).items())
        cells = [seed_stats([g.results["metrics"][s]["accuracy"] for g in group])
                 if all(s in g.results["metrics"] for g in group) else "" for s in subsets]
        body.append([dataset, method, setting, *cells, len(group)])
    return Table(TITLES[None], "runs", ["Dataset", "Method", "Setting", *subsets, "Seeds"], body)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
