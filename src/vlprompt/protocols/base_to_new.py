"""Base-to-new generalisation (methods.md §1.4, §11.2): train on the base half of the classes, test
on base and new classes with the same final prompt, report B, N and H = 2BN/(B+N).

B, N and H are split-agnostic for every method (all classes of a subset scored through one path). A
method told at test time which split an image comes from (capability ``split_aware_inference``: DePT,
MMRL) is marked "told base/new at test time", and its split-aware B, N and H stand beside them.

Per dataset, B and N are averaged over seeds; the average row averages B and N over datasets and
takes H of those averages, as the papers' "average over 11 datasets" rows do. The same numbers are
the panels of the base/new bar chart.
"""

from __future__ import annotations

from pathlib import Path

from vlprompt.protocols.common import ProtocolRequest, RunKey, RunPlan, b_n_h, method_config, seed_stats
from vlprompt.protocols.protocol import Figure, Protocol, ProtocolTable, register_protocol, split_average, unique


def plan_base_to_new(methods, datasets, seeds, preset: dict, overrides=(), out_dir=Path("runs/base2new"),
                     imbalance_ratio: float | None = None, protocol: str = "base_to_new") -> list[RunPlan]:
    """Each (dataset, method, seed) on the base classes; with ``imbalance_ratio``, downsampled and keyed by
    it, for the protocol named ``protocol`` (the imbalanced one plans through here)."""
    data = {"subsample": "base", "eval_subsets": ["base", "new"]}
    keys = {}
    if imbalance_ratio is not None:
        data["imbalance_ratio"] = imbalance_ratio
        keys = {"ratio": imbalance_ratio}
    return [
        RunPlan(m, d, s, method_config(m, preset, list(overrides), data={**data, "dataset": d},
                                       train={"seed": s}, output_dir=str(out_dir / "runs")),
                keys=dict(keys), protocol=protocol)
        for d in datasets for m in methods for s in seeds
    ]


def base_new_accuracies(plans: list[RunKey], results: list[dict], methods, datasets) -> dict:
    """(dataset, method) -> (base accuracies, new accuracies), one value per seed."""
    found = {}
    for d in datasets:
        for m in methods:
            mine = [r for p, r in zip(plans, results) if p.method == m and p.dataset == d]
            found[d, m] = ([r["metrics"]["base"]["accuracy"] for r in mine],
                           [r["metrics"]["new"]["accuracy"] for r in mine])
    return found


SPLIT_AWARE_MARK = "told base/new at test time"


def told_accuracies(plans: list[RunKey], results: list[dict], methods, datasets) -> dict:
    """(dataset, method) -> (base, new) accuracies scored told the split, for the methods whose runs are
    split-aware (results.json ``"inference": "split_aware"``); other methods are absent."""
    found = {}
    for d in datasets:
        for m in methods:
            mine = [r for p, r in zip(plans, results) if p.method == m and p.dataset == d]
            if mine and all(r.get("inference") == "split_aware" for r in mine):
                found[d, m] = ([r["metrics"]["base"]["split_aware"]["accuracy"] for r in mine],
                               [r["metrics"]["new"]["split_aware"]["accuracy"] for r in mine])
    return found


def base_new_means(accuracies: dict, methods, datasets) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Panel (each dataset, then "Average" if there are several) -> method -> (B, N, H)."""
    panels = {d: {m: b_n_h(*accuracies[d, m]) for m in methods} for d in datasets}
    if len(datasets) > 1:
        panels["Average"] = {m: b_n_h([panels[d][m][0] for d in datasets], [panels[d][m][1] for d in datasets])
                             for m in methods}
    return panels


def base_to_new_rows(accuracies: dict, methods, datasets, told: dict | None = None) -> tuple[list[str], list[list]]:
    """B, N, H per (dataset, method) and their average; when some method is split-aware (``told``, from
    ``told_accuracies``), a column marks its rows and its told B, N, H stand beside the split-agnostic ones."""
    header = ["Dataset", "Method", "Base", "New", "H", "Seeds"]
    means = base_new_means(accuracies, methods, datasets)
    rows = [[d, m, seed_stats(accuracies[d, m][0]), seed_stats(accuracies[d, m][1]), f"{means[d][m][2]:.2f}",
             len(accuracies[d, m][0])] for d in datasets for m in methods]
    if "Average" in means:
        rows += [["Average", m, *(f"{v:.2f}" for v in means["Average"][m]), ""] for m in methods]
    if not told:
        return header, rows
    aware = [m for m in methods if all((d, m) in told for d in datasets)]
    told_means = base_new_means(told, aware, datasets)

    def beside(row: list) -> list:
        d, m = row[0], row[1]
        if m not in aware:
            return row[:5] + ["split-agnostic", "", "", ""] + row[5:]
        if d == "Average":
            cells = [f"{v:.2f}" for v in told_means["Average"][m]]
        else:
            cells = [seed_stats(told[d, m][0]), seed_stats(told[d, m][1]), f"{told_means[d][m][2]:.2f}"]
        return row[:5] + [SPLIT_AWARE_MARK, *cells] + row[5:]

    return header[:5] + ["Inference", "Base (told)", "New (told)", "H (told)"] + header[5:], [beside(r) for r in rows]


def base_to_new_table(plans: list[RunKey], results: list[dict], name: str, title: str) -> ProtocolTable:
    """The table of base-to-new runs (with split-aware columns when a method is told the split) and its bars."""
    methods, datasets = unique(p.method for p in plans), unique(p.dataset for p in plans)
    accuracies = base_new_accuracies(plans, results, methods, datasets)
    header, rows = base_to_new_rows(accuracies, methods, datasets, told_accuracies(plans, results, methods, datasets))
    body, footer = split_average(rows)
    return ProtocolTable(name, title, header, body, footer,
                         figure=Figure("base_new_bars", base_new_means(accuracies, methods, datasets)))


class BaseToNew(Protocol):
    """Every (dataset, method, seed) trained on the base classes; the table and the bars of B, N, H."""

    name = "base_to_new"
    title = "Base-to-new generalisation"
    paper_comparison = "base_new"

    def claims(self, dataset: str, config: dict, results: dict) -> bool:
        data = config.get("data") or {}
        return not data.get("eval_datasets") and {"base", "new"} <= set(data.get("eval_subsets") or results["metrics"])

    def plan(self, request: ProtocolRequest) -> list[RunPlan]:
        return [p for d in request.datasets
                for p in plan_base_to_new(request.methods, [d], request.seeds, request.preset_dict,
                                          request.overrides_for(d), request.out_dir)]

    def table(self, plans: list[RunKey], results: list[dict]) -> ProtocolTable:
        return base_to_new_table(plans, results, self.name, self.title)


register_protocol(BaseToNew())
