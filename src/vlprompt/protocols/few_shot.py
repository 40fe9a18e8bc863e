"""Few-shot classification (methods.md §11.1): K shots per class for K in a list, several seeds,
top-1 on the full test split; one row per (dataset, method), one column per shot count, plus the
average over datasets; the panels are the accuracy-against-shots curves."""

from __future__ import annotations

import statistics
from pathlib import Path

from vlprompt.errors import ConfigError
from vlprompt.protocols.common import ProtocolRequest, RunKey, RunPlan, accuracy, mean_std, method_config, seed_stats
from vlprompt.protocols.protocol import (
    Figure,
    Protocol,
    ProtocolTable,
    missing_runs,
    register_protocol,
    setting_key,
    split_average,
    unique,
)


def plan_few_shot(methods, datasets, shots, seeds, preset: dict, overrides=(),
                  out_dir=Path("runs/few_shot")) -> list[RunPlan]:
    return [
        RunPlan(m, d, s, method_config(m, preset, list(overrides),
                                       data={"dataset": d, "shots": k, "subsample": "all", "eval_subsets": ["all"]},
                                       train={"seed": s}, output_dir=str(out_dir / "runs")),
                keys={"shots": k}, protocol="few_shot")
        for d in datasets for m in methods for k in shots for s in seeds
    ]


def few_shot_table(plans: list[RunKey], results: list[dict], methods, datasets, shots):
    """(header, rows, panels of the curves): mean ± std over seeds per (dataset, method, shots)."""
    accs = {(d, m, k): [] for d in datasets for m in methods for k in shots}
    for p, r in zip(plans, results):
        accs[p.dataset, p.method, p.keys["shots"]].append(accuracy(r))
    stats = {key: mean_std(values) for key, values in accs.items() if values}
    panels = {d: {m: ([stats[d, m, k][0] for k in shots], [stats[d, m, k][1] for k in shots]) for m in methods}
              for d in datasets}
    rows = [[d, m, *(seed_stats(accs[d, m, k]) for k in shots)] for d in datasets for m in methods]
    if len(datasets) > 1:
        panels["Average"] = {m: ([statistics.fmean(panels[d][m][0][i] for d in datasets) for i in range(len(shots))],
                                 None) for m in methods}
        rows += [["Average", m, *(f"{v:.2f}" for v in panels["Average"][m][0])] for m in methods]
    return ["Dataset", "Method"] + [f"{k} shots" for k in shots], rows, panels


class FewShot(Protocol):
    """Every (dataset, method, shot count, seed) on all classes; the table and the curves."""

    name = "few_shot"
    title = "Few-shot classification"
    takes = needs = ("shots",)
    paper_comparison = "shots"

    def claims(self, dataset: str, config: dict, results: dict) -> bool:
        return not (config.get("data") or {}).get("eval_datasets") and "all" in results["metrics"]

    def plan(self, request: ProtocolRequest) -> list[RunPlan]:
        if not request.shots:
            raise ConfigError("give at least one shot count, e.g. --shots 1,2,4,8,16")
        return [p for d in request.datasets
                for p in plan_few_shot(request.methods, [d], request.shots, request.seeds, request.preset_dict,
                                       request.overrides_for(d), request.out_dir)]

    def table(self, plans: list[RunKey], results: list[dict]) -> ProtocolTable:
        """Shot counts in the order they were asked for."""
        return self._table(plans, results, unique(p.keys["shots"] for p in plans))

    def report_tables(self, plans: list[RunKey], results: list[dict]) -> list[ProtocolTable]:
        """Shot counts in increasing order, whichever order the registry holds the runs in."""
        shots = sorted(unique(p.keys["shots"] for p in plans))
        missing = missing_runs(plans, [setting_key({"shots": k}) for k in shots])
        if missing:
            return [ProtocolTable(self.name, self.title, missing=missing)]
        return [self._table(plans, results, shots)]

    def _table(self, plans: list[RunKey], results: list[dict], shots: list[int]) -> ProtocolTable:
        methods, datasets = unique(p.method for p in plans), unique(p.dataset for p in plans)
        header, rows, panels = few_shot_table(plans, results, methods, datasets, shots)
        body, footer = split_average(rows)
        return ProtocolTable(self.name, self.title, header, body, footer, figure=Figure("shot_curves", panels, shots))


register_protocol(FewShot())
