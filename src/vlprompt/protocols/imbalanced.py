"""Class-imbalanced base-to-new (methods.md §10.6): the few-shot training set is downsampled to
n_k = max(1, round(16 * ratio^(k/(K-1)))) per class, tests stay balanced; one block per ratio."""

from __future__ import annotations

from vlprompt.errors import ConfigError
from vlprompt.protocols.base_to_new import base_new_accuracies, base_to_new_table, plan_base_to_new, told_accuracies
from vlprompt.protocols.common import ProtocolRequest, ProtocolResult, execute, register_protocol


@register_protocol("imbalanced")
def run_imbalanced(request: ProtocolRequest) -> ProtocolResult:
    if not request.ratios:
        raise ConfigError("give at least one imbalance ratio, e.g. --ratios 1,0.25,0.0625")
    methods, datasets = request.methods, request.datasets
    header, rows, all_plans, all_results = [], [], [], []
    for ratio in request.ratios:
        plans = plan_base_to_new(methods, datasets, request.seeds, request.preset_dict, request.overrides,
                                 request.out_dir, imbalance_ratio=ratio)
        results = execute(plans, request)
        all_plans += plans
        all_results += results
        header, block = base_to_new_table(base_new_accuracies(plans, results, methods, datasets), methods, datasets,
                                          told_accuracies(plans, results, methods, datasets))
        rows += [[f"{ratio:g}"] + r for r in block]
    return ProtocolResult("imbalanced", ["Ratio"] + header, rows, results=all_results, plans=all_plans)
