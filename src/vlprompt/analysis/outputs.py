"""The files the analysis stage writes into a run directory, and its record of having run.

Kept apart from the analyses themselves (which need torch, the backbone and the data) so that the
report, which only reads these files, imports no model code to find them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

RESULTS_FILE = "results.json"  # written by the engine; the record names the results it analysed
METRICS_FILE = "metrics.jsonl"
RECORD_FILE = "analysis.json"
RECORD_FORMAT = "vlprompt-analysis/1"
CURVES_FIGURE = "metrics_curves.png"
NORMS_FIGURE = "prompt_norms.png"
NEURAL_COLLAPSE_FILE = "neural_collapse.json"
#: the folder, inside a prompt's run directory, that ``vlprompt analyze corruption`` writes by default and
#: where the report finds the sweep of that run
CORRUPTION_DIR = "corruption"
CORRUPTION_SUMMARY = "corruption.json"
CORRUPTION_HEATMAP = "corruption_heatmap.png"
#: the command that runs the analysis stage on run directories, as the report tells it
ANALYZE_COMMAND = "vlprompt analyze run"


def results_digest(run_dir: str | Path) -> str | None:
    """SHA-256 of the run's results.json, or None before the run finished."""
    path = Path(run_dir) / RESULTS_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def current_record(run_dir: str | Path) -> dict | None:
    """The analysis record of the run's present results; None when the stage has not run on them."""
    path = Path(run_dir) / RECORD_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    return record if record.get("results_sha256") == results_digest(run_dir) else None
