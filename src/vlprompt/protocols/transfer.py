"""Transfer protocols: train on a source dataset, evaluate the same prompt on targets with their own
classes (methods.md §11.3-§11.4). Domain generalisation targets share the source's concepts under a
shift (the ImageNet variants; the world's shifted object sets); cross-dataset targets are other tasks."""

from __future__ import annotations

from vlprompt.errors import ConfigError
from vlprompt.protocols.common import (ProtocolRequest, ProtocolResult, RunPlan, accuracy, execute, method_config,
                                       register_protocol, seed_stats)

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


@register_protocol("domain_generalization")
def run_domain_generalization(request: ProtocolRequest) -> ProtocolResult:
    return run_transfer("domain_generalization", request, DG_TARGETS)


@register_protocol("cross_dataset")
def run_cross_dataset(request: ProtocolRequest) -> ProtocolResult:
    return run_transfer("cross_dataset", request, CROSS_DATASET_TARGETS)


def run_transfer(kind: str, request: ProtocolRequest, defaults: dict[str, list[str]]) -> ProtocolResult:
    """Train on the first dataset; targets default to the standard ones of that source."""
    source, methods, seeds = request.datasets[0], request.methods, request.seeds
    targets = request.targets or defaults.get(source)
    if not targets:
        raise ConfigError(f"no default targets for source {source!r}; pass --targets "
                          f"(defaults exist for: {', '.join(defaults)})")
    preset_dict, overrides, out_dir = request.preset_dict, request.overrides, request.out_dir
    plans = [
        RunPlan(m, source, s, method_config(m, preset_dict, list(overrides),
                                            data={"dataset": source, "subsample": "all", "eval_subsets": ["all"],
                                                  "eval_datasets": list(targets)},
                                            train={"seed": s}, output_dir=str(out_dir / "runs")))
        for m in methods for s in seeds
    ]
    results = execute(plans, request.workers)
    header = ["Method", f"{source} (source)"] + targets + ["Average (targets)"]
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
    return ProtocolResult(kind, header, rows, results=results)
