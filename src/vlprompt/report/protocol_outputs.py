"""Render a protocol's result into its folder: the table as Markdown and CSV, and its figure."""

from __future__ import annotations

import json
from pathlib import Path

from vlprompt.analysis.outputs import ANALYZE_COMMAND, NEURAL_COLLAPSE_FILE, current_record
from vlprompt.errors import ConfigError
from vlprompt.io import write_text
from vlprompt.protocols.common import ProtocolResult, mean_std
from vlprompt.report.figures import plot_base_to_new, plot_few_shot
from vlprompt.report.tables import csv_table, markdown_table


def write_protocol_result(result: ProtocolResult, out_dir: str | Path) -> str:
    """Write ``NAME.md``, ``NAME.csv`` and ``NAME.png`` (when the protocol has a figure); return the Markdown."""
    out_dir = Path(out_dir)
    text_rows = [[str(c) for c in r] for r in result.rows]
    table = markdown_table(result.header, text_rows)
    write_text(out_dir / f"{result.name}.md", table)
    write_text(out_dir / f"{result.name}.csv", csv_table(result.header, text_rows))
    if result.figure == "base_to_new":
        plot_base_to_new(result.panels, out_dir / f"{result.name}.png")
    elif result.figure == "few_shot":
        plot_few_shot(result.panels, result.shots, out_dir / f"{result.name}.png")
    if result.name == "imbalanced":
        write_text(out_dir / "imbalanced_neural_collapse.md", markdown_table(*imbalance_collapse_table(result)))
    return table


COLLAPSE_COLUMNS = {"nc1": "NC1", "image_equiangularity": "image equiangularity",
                    "text_equiangularity": "text equiangularity", "self_duality": "self-duality"}


def imbalance_collapse_table(result: ProtocolResult) -> tuple[list[str], list[list[str]]]:
    """Per ratio and method: base accuracy and the neural-collapse metrics of the final prompt on the base
    (trained, imbalanced) classes' test images, mean ± std over seeds (NPT's claim: the anchored prompt
    keeps the class features closer to a simplex ETF as the imbalance grows), as the analysis stage wrote them."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for plan, r in zip(result.plans, result.results):
        metrics = _analysed_collapse(Path(r["run_dir"])).get("base")
        if metrics is None:  # per-image prompts (CoCoOp) have no class features to measure
            continue
        groups.setdefault((plan.keys["ratio"], plan.method), []).append({"base": r["metrics"]["base"]["accuracy"],
                                                                          **metrics})
    header = ["Ratio", "Method", "Base", *COLLAPSE_COLUMNS.values(), "Seeds"]
    rows = []
    for (ratio, method), runs in groups.items():  # ratios and methods in the protocol's order
        cells = [mean_std([run[key] for run in runs]) for key in ("base", *COLLAPSE_COLUMNS)]
        rows.append([f"{ratio:g}", method, *(f"{m:.2f} ± {s:.2f}" if k == 0 else f"{m:.3f} ± {s:.3f}"
                                              for k, (m, s) in enumerate(cells)), str(len(runs))])
    return header, rows


def _analysed_collapse(run_dir: Path) -> dict:
    """The run's neural-collapse metrics from its directory; {} where the stage found none to measure."""
    record = current_record(run_dir)
    if record is None:
        raise ConfigError(f"{run_dir} has no analysis of its present results; run `{ANALYZE_COMMAND} {run_dir}` "
                          "(sweep and train runs pass through it as they finish)")
    if "neural collapse" not in record["written"]:
        return {}
    return json.loads((run_dir / NEURAL_COLLAPSE_FILE).read_text())
