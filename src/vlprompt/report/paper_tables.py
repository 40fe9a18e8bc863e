"""Our numbers beside the papers': per protocol, each measured mean ± std with the published value and the
difference (measured mean minus paper), the rows whose protocol differs from the paper's flagged, and the
source of every paper cell. "—" where the papers publish nothing for a row (e.g. the synthetic world).

Averages over datasets are compared only when the runs cover the datasets the paper averages over
(the 11 of CoOp's benchmark; a transfer protocol's standard targets). Which protocols are compared, and
in which shape, each protocol declares (``Protocol.paper_comparison``); the builders here are by shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from vlprompt.protocols.common import b_n_h, mean_std
from vlprompt.protocols.protocol import PROTOCOLS, Protocol
from vlprompt.protocols.transfer import CROSS_DATASET_TARGETS
from vlprompt.registry import Registry
from vlprompt.report.published import AVERAGE, TARGETS_AVERAGE, PublishedTable, differences, find_table, method_key
from vlprompt.report.tables import csv_table, markdown_table
from vlprompt.sweep.registry import Row

NONE = "—"
ELEVEN = ["imagenet", *CROSS_DATASET_TARGETS["imagenet"]]  # the datasets of the papers' average rows
DIFFERS, SOURCE = "Protocol differs from the paper's", "Paper source"


@dataclass
class Comparison:
    title: str
    name: str  # file stem of its CSV and Markdown
    header: list[str]
    rows: list[list[str]]
    flagged: list[int]  # indices of the rows whose protocol differs from the paper's

    def csv(self) -> str:
        return csv_table(self.header, self.rows)

    def markdown(self) -> str:
        cells = [[c.replace("|", "\\|") for c in r] for r in self.rows]  # a pipe would end a Markdown cell
        return f"## {self.title}\n\n" + markdown_table(self.header, cells)


#: comparison shape (``Protocol.paper_comparison``) -> its builder, from the protocol and its finished rows
COMPARISONS: Registry[Callable[..., Comparison]] = Registry("paper comparison")


def protocol_of(row: Row) -> str | None:
    """The row's protocol; for runs found without a registry, the first registered protocol that claims it."""
    if row.protocol:
        return row.protocol
    return next((name for name, protocol in PROTOCOLS.in_registration_order()
                 if protocol.claims(row.dataset, row.config, row.results)), None)


def paper_comparisons(rows: list[Row], tables: tuple[PublishedTable, ...] | None = None) -> list[Comparison]:
    """One comparison per protocol that papers publish and the rows ran, in registration order."""
    done = [r for r in rows if r.state == "done" and r.results]
    found = []
    for name, protocol in PROTOCOLS.in_registration_order():
        mine = [r for r in done if protocol_of(r) == name]
        if protocol.paper_comparison and mine:
            found.append(COMPARISONS.get(protocol.paper_comparison)(protocol, mine, tables))
    return found


class _Builder:
    """Rows of one comparison: measured cells, the matching paper cells and their differences."""

    def __init__(self, protocol: str, tables):
        self.protocol, self.tables, self.rows, self.flagged = protocol, tables, [], []

    def add(self, keys: list, group: list[Row], dataset: str, metrics: list[tuple], parts: dict | None = None,
            reason: str | None = None):
        """One row. ``metrics``: (column, the measured value per seed, or (mean, text) already computed);
        ``dataset``: the paper's cell it sits beside; ``parts``: an average row's groups per dataset (the
        protocol is checked dataset by dataset); ``reason``: why an average row cannot be compared."""
        first = group[0]
        method = method_key(first.config, first.results, first.method)
        cells, papers, diffs = [], set(), []
        for column, measured in metrics:
            mean, text = measured if isinstance(measured, tuple) else (mean_std(measured)[0], _stats(measured))
            table, found = find_table(self.protocol, method, first.config, dataset, column,
                                      [r.config for r in group], [r.results for r in group], self.tables)
            if table is None or reason:
                cells += [text, NONE, NONE]
                diffs += [reason] if table is not None and reason not in diffs else []
                continue
            if parts:  # an average: each dataset's runs against the paper's setting for that dataset
                found = [d for ds, part in parts.items()
                         for d in differences(table, [r.config for r in part], [r.results for r in part], ds)]
            paper = table.value(dataset, column)
            cells += [text, table.text(paper), ("≈" if table.read_off_plot else "") + f"{mean - paper:+.2f}"]
            papers.add(f"{table.paper}: {table.source}" + (f" ({table.note})" if table.note else ""))
            diffs += [d for d in found if d not in diffs]
        if diffs:
            self.flagged.append(len(self.rows))
        self.rows.append([*map(str, keys), *cells, "; ".join(diffs), " · ".join(sorted(papers)) or NONE])


def _stats(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}"


def _groups(rows: list[Row], key) -> dict[tuple, list[Row]]:
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def _shots(row: Row):
    return row.keys.get("shots", (row.config.get("data") or {}).get("shots", row.results.get("shots")))


def _metric_header(columns: list[str]) -> list[str]:
    return [h for c in columns for h in (c, f"{c} (paper)", f"{c} difference")]


@COMPARISONS.register("base_new")
def _base_to_new(protocol: Protocol, rows: list[Row], tables) -> Comparison:
    b = _Builder(protocol.name, tables)
    groups = _groups(rows, lambda r: (r.method, r.dataset, json.dumps(r.keys, sort_keys=True)))
    for (method, dataset, _), group in groups.items():
        base = [r.results["metrics"]["base"]["accuracy"] for r in group]
        new = [r.results["metrics"]["new"]["accuracy"] for r in group]
        h = b_n_h(base, new)[2]
        b.add([dataset, method, len(group)], group, dataset, [("base", base), ("new", new), ("H", (h, f"{h:.2f}"))])
    for method in dict.fromkeys(m for m, _, _ in groups):
        mine, label = _averaged({d: g for (m, d, _), g in groups.items() if m == method})
        if len(mine) < 2:
            continue
        means = {d: b_n_h([r.results["metrics"]["base"]["accuracy"] for r in g],
                          [r.results["metrics"]["new"]["accuracy"] for r in g]) for d, g in mine.items()}
        avg = b_n_h([m[0] for m in means.values()], [m[1] for m in means.values()])
        group = [r for g in mine.values() for r in g]
        b.add([label, method, ""], group, AVERAGE, [(c, (v, f"{v:.2f}")) for c, v in zip(("base", "new", "H"), avg)],
              parts=mine, reason=_average_reason(mine))
    header = ["Dataset", "Method", "Seeds", *_metric_header(["base", "new", "H"]), DIFFERS, SOURCE]
    return Comparison(protocol.title, f"paper_{protocol.name}", header, b.rows, b.flagged)


@COMPARISONS.register("shots")
def _few_shot(protocol: Protocol, rows: list[Row], tables) -> Comparison:
    b = _Builder(protocol.name, tables)
    groups = _groups(rows, lambda r: (r.method, r.dataset, _shots(r)))
    for (method, dataset, shots), group in groups.items():
        b.add([dataset, method, shots, len(group)], group, dataset,
              [(shots, [r.results["metrics"]["all"]["accuracy"] for r in group])])
    for method, shots in dict.fromkeys((m, k) for m, _, k in groups):
        mine, label = _averaged({d: g for (m, d, k), g in groups.items() if m == method and k == shots})
        if len(mine) < 2:
            continue
        avg = sum(mean_std([r.results["metrics"]["all"]["accuracy"] for r in g])[0] for g in mine.values()) / len(mine)
        b.add([label, method, shots, ""], [r for g in mine.values() for r in g], AVERAGE,
              [(shots, (avg, f"{avg:.2f}"))], parts=mine, reason=_average_reason(mine))
    header = ["Dataset", "Method", "Shots", "Seeds", *_metric_header(["accuracy"]), DIFFERS, SOURCE]
    return Comparison(protocol.title, f"paper_{protocol.name}", header, b.rows, b.flagged)


@COMPARISONS.register("transfer")
def _transfer(protocol: Protocol, rows: list[Row], tables) -> Comparison:
    """Needs the protocol's ``standard_targets`` (source -> targets), as the transfer protocols have."""
    b = _Builder(protocol.name, tables)
    groups = _groups(rows, lambda r: (r.method, r.dataset, tuple((r.config.get("data") or {}).get("eval_datasets")
                                                                 or r.results["metrics"].get("datasets", {}))))
    for (method, source, targets), group in groups.items():
        b.add([source, method, f"{source} (source)", len(group)], group, source,
              [("accuracy", [r.results["metrics"]["all"]["accuracy"] for r in group])])
        means = []
        for target in targets:
            accs = [r.results["metrics"]["datasets"][target]["accuracy"] for r in group]
            means.append(mean_std(accs)[0])
            b.add([source, method, target, len(group)], group, target, [("accuracy", accs)])
        standard = list(targets) == protocol.standard_targets.get(source)
        avg = sum(means) / len(means)
        b.add([source, method, "Average (targets)", len(group)], group, TARGETS_AVERAGE,
              [("accuracy", (avg, f"{avg:.2f}"))],
              reason=None if standard else "other targets than the paper's, whose average is not comparable")
    header = ["Trained on", "Method", "Evaluated on", "Seeds", *_metric_header(["accuracy"]), DIFFERS, SOURCE]
    return Comparison(protocol.title, f"paper_{protocol.name}", header, b.rows, b.flagged)


def _averaged(per_dataset: dict) -> tuple[dict, str]:
    """The datasets of a method's average row: the papers' 11 when all were run (others left out), else all."""
    if set(ELEVEN) <= set(per_dataset):
        return {d: per_dataset[d] for d in ELEVEN}, "Average (11 datasets)"
    return per_dataset, "Average"


def _average_reason(per_dataset: dict) -> str | None:
    """Why an average over these datasets cannot stand beside the paper's (over the 11), or None."""
    if sorted(per_dataset) == sorted(ELEVEN):
        return None
    return f"averaged over {len(per_dataset)} datasets, the paper over the 11 of its table"
