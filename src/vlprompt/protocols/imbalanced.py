"""Class-imbalanced base-to-new (methods.md §10.6): the few-shot training set is downsampled to
n_k = max(1, round(16 * ratio^(k/(K-1)))) per class, tests stay balanced; one block per ratio, and beside
it a table of the neural collapse of each run's prompt (NPT's claim: anchoring keeps it as imbalance grows)."""

from __future__ import annotations

from vlprompt.errors import ConfigError
from vlprompt.protocols.base_to_new import base_to_new_table, plan_base_to_new
from vlprompt.protocols.common import ProtocolRequest, RunKey, RunPlan
from vlprompt.protocols.protocol import Protocol, ProtocolTable, group_runs, missing_runs, register_protocol


class Imbalanced(Protocol):
    """Base-to-new for each imbalance ratio; one table with a Ratio column, in the report one per ratio."""

    name = "imbalanced"
    title = "Class-imbalanced base-to-new"
    takes = needs = ("ratios",)
    analysis_tables = ("neural_collapse",)

    def plan(self, request: ProtocolRequest) -> list[RunPlan]:
        if not request.ratios:
            raise ConfigError("give at least one imbalance ratio, e.g. --ratios 1,0.25,0.0625")
        return [p for ratio in request.ratios for d in request.datasets
                for p in plan_base_to_new(request.methods, [d], request.seeds, request.preset_dict,
                                          request.overrides_for(d), request.out_dir, imbalance_ratio=ratio,
                                          protocol=self.name)]

    def table(self, plans: list[RunKey], results: list[dict]) -> ProtocolTable:
        header, rows = [], []
        for ratio, (mine, theirs) in group_runs(plans, results, lambda p, _: p.keys["ratio"]).items():
            block = base_to_new_table(mine, theirs, self.name, self.title)
            header = ["Ratio"] + block.header
            rows += [[f"{ratio:g}"] + r for r in block.rows + block.footer]
        return ProtocolTable(self.name, self.title, header, rows)

    def report_tables(self, plans: list[RunKey], results: list[dict]) -> list[ProtocolTable]:
        tables = []
        for ratio, (mine, theirs) in group_runs(plans, results, lambda p, _: p.keys["ratio"]).items():
            name, title = f"{self.name}_{ratio:g}", f"{self.title}, ratio {ratio:g}"
            missing = missing_runs(mine)
            tables.append(ProtocolTable(name, title, missing=missing) if missing
                          else base_to_new_table(mine, theirs, name, title))
        return tables


register_protocol(Imbalanced())
