"""The protocols' tables and figures rebuilt from registry rows, by the protocols themselves.

Rows are grouped by protocol; each registered protocol turns its finished runs into its report tables
(``Protocol.report_tables``: grouped as it chooses, e.g. by source and targets for transfer; a table
whose group misses runs lists them instead) and the report draws each table's figure by its kind. Rows
of grid sweeps (no protocol), or of a protocol not registered in this process, get one generic table:
mean ± std over seeds per subset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vlprompt.protocols.common import RunKey, seed_stats
from vlprompt.protocols.protocol import PROTOCOLS, unique
from vlprompt.report.figures import draw_figure
from vlprompt.sweep.registry import Row


@dataclass
class Table:
    title: str
    name: str  # file stem of its CSV and figure
    header: list[str]
    rows: list[list]
    footer: list[list] = field(default_factory=list)  # average rows, kept below when sorting
    figure: Path | None = None
    missing: list[str] = field(default_factory=list)


def _keys(rows: list[Row]) -> list[RunKey]:
    """What the protocols' tables read of each run besides its results; no run config is parsed (that would
    validate it against the learner registry and import the model code)."""
    return [RunKey(r.method, r.dataset, r.seed, keys=r.keys, protocol=r.protocol) for r in rows]


def protocol_tables(rows: list[Row], figure_dir: Path) -> list[Table]:
    done = [r for r in rows if r.state == "done"]
    tables = []
    for name in unique(r.protocol for r in done):
        mine = [r for r in done if r.protocol == name]
        if name not in PROTOCOLS:
            tables.append(_grid(mine))
            continue
        for t in PROTOCOLS.get(name).report_tables(_keys(mine), [r.results for r in mine]):
            figure = None if t.figure is None or t.missing else draw_figure(t.figure, figure_dir / f"{t.name}.png")
            tables.append(Table(t.title, t.name, t.header, t.rows, t.footer, figure, t.missing))
    return tables


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
    return Table("Runs", "runs", ["Dataset", "Method", "Setting", *subsets, "Seeds"], body)
