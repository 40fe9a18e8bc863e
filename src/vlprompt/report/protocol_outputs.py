"""Render a protocol's result into its folder: the table as Markdown and CSV, its figure, and the tables
of per-run analyses the protocol declares (``Protocol.analysis_tables``), each kind by its writer here."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from vlprompt.analysis.outputs import ANALYZE_COMMAND, NEURAL_COLLAPSE_FILE, current_record
from vlprompt.errors import ConfigError
from vlprompt.io import write_text
from vlprompt.protocols.common import mean_std
from vlprompt.protocols.protocol import ProtocolResult
from vlprompt.registry import Registry
from vlprompt.report.figures import draw_figure
from vlprompt.report.tables import csv_table, markdown_table

#: analysis table kind -> its (header, rows) from a protocol's result
ANALYSIS_TABLES: Registry[Callable[[ProtocolResult], tuple[list[str], list[list[str]]]]] = Registry("analysis table")


def write_protocol_result(result: ProtocolResult, out_dir: str | Path) -> str:
    """Write ``NAME.md``, ``NAME.csv`` and ``NAME.png`` (when the protocol has a figure); return the Markdown."""
    out_dir, result_table = Path(out_dir), result.table
    text_rows = [[str(c) for c in r] for r in result_table.rows + result_table.footer]
    table = markdown_table(result_table.header, text_rows)
    write_text(out_dir / f"{result_table.name}.md", table)
    write_text(out_dir / f"{result_table.name}.csv", csv_table(result_table.header, text_rows))
    if result_table.figure is not None:
        draw_figure(result_table.figure, out_dir / f"{result_table.name}.png")
    for kind in result.protocol.analysis_tables:
        write_text(out_dir / f"{result_table.name}_{kind}.md", markdown_table(*ANALYSIS_TABLES.get(kind)(result)))
    return table


COLLAPSE_COLUMNS = {"nc1": "NC1", "image_equiangularity": "image equiangularity",
                    "text_equiangularity": "text equiangularity", "self_duality": "self-duality"}


@ANALYSIS_TABLES.register("neural_collapse")
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
