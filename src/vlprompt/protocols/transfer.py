"""Transfer protocols: train on a source dataset, evaluate the same prompt on targets with their own
classes (methods.md §11.3-§11.4). Domain generalisation targets share the source's concepts under a
shift (the ImageNet variants; the world's shifted object sets); cross-dataset targets are other tasks."""

from __future__ import annotations

from pathlib import Path

from vlprompt.errors import ConfigError
from vlprompt.protocols.common import (
    ProtocolRequest,
    ProtocolResult,
    RunPlan,
    accuracy,
    execute,
    method_config,
    register_protocol,
    seed_stats,
)

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


def transfer_targets(kind: str, source: str, targets: list[str] | None = None) -> list[str]:
    """The given targets, else the standard ones of ``kind`` ("domain_generalization" or "cross_dataset")."""
    defaults = {"domain_generalization": DG_TARGETS, "cross_dataset": CROSS_DATASET_TARGETS}[kind]
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


def transfer_table(plans: list[RunPlan], results: list[dict], methods, source: str, targets: list[str]):
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


@register_protocol("domain_generalization")
def run_domain_generalization(request: ProtocolRequest) -> ProtocolResult:
    return run_transfer("domain_generalization", request)


@register_protocol("cross_dataset")
def run_cross_dataset(request: ProtocolRequest) -> ProtocolResult:
    return run_transfer("cross_dataset", request)


def run_transfer(kind: str, request: ProtocolRequest) -> ProtocolResult:
    """Train on the first dataset; targets default to the standard ones of that source."""
    source = request.datasets[0]
    targets = transfer_targets(kind, source, request.targets or None)
    plans = plan_transfer(kind, request.methods, source, request.seeds, targets, request.preset_dict,
                          request.overrides, request.out_dir)
    results = execute(plans, request)
    header, rows = transfer_table(plans, results, request.methods, source, targets)
    return ProtocolResult(kind, header, rows, results=results)
