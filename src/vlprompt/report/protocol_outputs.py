"""Render a protocol's result into its folder: the table as Markdown and CSV, and its figure."""

from __future__ import annotations

from pathlib import Path

from vlprompt.io import write_text
from vlprompt.protocols.common import ProtocolResult
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
    return table
