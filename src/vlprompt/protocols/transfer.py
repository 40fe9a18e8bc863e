"""Transfer protocols: train on a source dataset, evaluate the same prompt on targets with their own
classes (methods.md §11.3-§11.4). Domain generalisation targets share the source's concepts under a
shift (the ImageNet variants; the world's shifted object sets); cross-dataset targets are other tasks."""

from __future__ import annotations

from pathlib import Path

from vlprompt.errors import ConfigError
from vlprompt.protocols.common import ProtocolRequest, RunKey, RunPlan, accuracy, method_config, seed_stats
from vlprompt.protocols.protocol import Protocol, ProtocolTable, group_runs, register_protocol, unique

DG_TARGETS = {
    "imagenet": ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"],
    "world:objects": ["world:objects_outline", "world:objects_noise", "world:objects_blur",
                      "world:objects_colorshift"],
}
CROSS_DATASET_TARGETS = {
    "imagenet": ["caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
                 "sun397", "dtd", "eurosat", "ucf101"],
    "world:objects": ["world:shapes", "world:colours", "world:textures", "world:counts"],
}


def transfer_targets(defaults: dict[str, list[str]], source: str, targets: list[str] | None = None) -> list[str]:
    """The given targets, else the standard ones of ``source`` in ``defaults`` (source -> targets)."""
    targets = targets or defaults.get(source)
    if not targets:
        raise ConfigError(f"no default targets for source {source!r}; pass --targets "
                          f"(defaults exist for: {', '.join(defaults)})")
    return list(targets)


def plan_transfer(kind: str, methods, source: str, seeds, targets: list[str], preset: dict, overrides=(),
                  out_dir: Path = Path("runs/transfer")) -> list[RunPlan]:
    return [
        RunPlan(m, source, s, method_config(m, preset, list(overrides),
                                            data={"dataset": source, "subsample": "all", "eval_subsets": ["all"],
                                                  "eval_datasets": list(targets)},
                                            train={"seed": s}, output_dir=str(out_dir / "runs")),
                protocol=kind)
        for m in methods for s in seeds
    ]


def transfer_table(plans: list[RunKey], results: list[dict], methods, source: str, targets: list[str]):
    """Source accuracy and each target's, mean ± std over seeds, and the average over targets of the means."""
    header = ["Method", f"{source} (source)"] + list(targets) + ["Average (targets)"]
    rows = []
    for m in methods:
        mine = [r for p, r in zip(plans, results) if p.method == m]
        row = [m, seed_stats([accuracy(r) for r in mine])]
        means = []
        for t in targets:
            accs = [r["metrics"]["datasets"][t]["accuracy"] for r in mine]
            means.append(sum(accs) / len(accs))
            row.append(seed_stats(accs))
        row.append(f"{sum(means) / len(means):.2f}")
        rows.append(row)
    return header, rows


class Transfer(Protocol):
    """Train on the first dataset, evaluate on targets that default to the standard ones of that source."""

    takes = ("targets",)
    paper_comparison = "transfer"

    def __init__(self, name: str, title: str, standard_targets: dict[str, list[str]], claims_any_targets: bool):
        self.name, self.title = name, title
        self.standard_targets = standard_targets  # source -> its standard targets
        self.claims_any_targets = claims_any_targets  # else only runs on some of the source's standard targets

    def claims(self, dataset: str, config: dict, results: dict) -> bool:
        targets = (config.get("data") or {}).get("eval_datasets")
        return bool(targets) and (self.claims_any_targets or set(targets) <= set(self.standard_targets.get(dataset, [])))

    def plan(self, request: ProtocolRequest) -> list[RunPlan]:
        source = request.datasets[0]
        targets = transfer_targets(self.standard_targets, source, request.targets or None)
        return plan_transfer(self.name, request.methods, source, request.seeds, targets, request.preset_dict,
                             request.overrides_for(source), request.out_dir)

    def table(self, plans: list[RunKey], results: list[dict]) -> ProtocolTable:
        source, targets = plans[0].dataset, evaluated_targets(results[0])
        header, rows = transfer_table(plans, results, unique(p.method for p in plans), source, targets)
        return ProtocolTable(self.name, self.title, header, rows)

    def report_tables(self, plans: list[RunKey], results: list[dict]) -> list[ProtocolTable]:
        """One table per source and targets, named after the source."""
        tables = []
        groups = group_runs(plans, results, lambda p, r: (p.dataset, tuple(evaluated_targets(r))))
        for (source, _), (mine, theirs) in groups.items():
            table = self.table(mine, theirs)
            table.name, table.title = f"{self.name}_{file_stem(source)}", f"{self.title} from {source}"
            tables.append(table)
        return tables


def evaluated_targets(result: dict) -> list[str]:
    """The target datasets a finished run was evaluated on, in the order its config listed them."""
    return list(result["metrics"]["datasets"])


def file_stem(name: str) -> str:
    """``name`` with every character other than letters, digits, '-', '_' and '.' replaced by '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# registered in this order: a run found without a registry on shifted versions of its source is domain
# generalisation, on any other targets cross-dataset transfer
register_protocol(Transfer("domain_generalization", "Domain generalisation", DG_TARGETS, claims_any_targets=False))
register_protocol(Transfer("cross_dataset", "Cross-dataset transfer", CROSS_DATASET_TARGETS, claims_any_targets=True))
