"""The runs a report shows: the rows of a run registry, or the finished run directories of a folder, with
variants of one method told apart (``report/variants.py``) and runs whose process died shown as interrupted."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import yaml

from vlprompt.errors import ConfigError
from vlprompt.report.variants import label_variants
from vlprompt.sweep.registry import REGISTRY_FILE, Row, RunRegistry, process_alive


def find_registry(where: str | Path) -> Path | None:
    """The registry file itself, one inside ``where``, or the one beside a sweep's ``runs`` folder."""
    where = Path(where).expanduser()
    if where.is_file():
        return where
    for candidate in (where / REGISTRY_FILE, where.parent / REGISTRY_FILE):
        if candidate.is_file():
            return candidate
    return None


def load_rows(where: str | Path) -> list[Row]:
    """Every row of the registry at ``where``; without one, a done row per ``*/results.json`` below it."""
    registry = find_registry(where)
    if registry is not None:
        reg = RunRegistry(registry, create=False)
        try:
            return label_variants([_interrupted(r) for r in reg.rows()])
        finally:
            reg.close()
    found = sorted(Path(where).expanduser().glob("**/results.json"))
    if not found:
        raise ConfigError(f"{where} holds neither a run registry ({REGISTRY_FILE}) nor run directories with "
                          "results.json; give a sweep's output folder or a folder of runs")
    return label_variants([_row_of(path.parent) for path in found])


def _interrupted(row: Row) -> Row:
    """A row left "running" by a process that has died (killed, or its machine restarted) is shown as
    interrupted: nothing runs it until the next ``sweep run`` or ``vlprompt run`` takes it over."""
    if row.state == "running" and not process_alive(row.host, row.pid, row.pid_start):
        return replace(row, state="interrupted")
    return row


def _row_of(run_dir: Path) -> Row:
    results = json.loads((run_dir / "results.json").read_text())
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    method = "+".join([results["method"], *results.get("regularizers", [])])
    keys = {"shots": results["shots"]} if results.get("shots") is not None else {}
    return Row(spec_id=run_dir.name, config_hash=results["run_id"], config=config, protocol=None, method=method,
               dataset=results["dataset"], seed=results["seed"], keys=keys, run_dir=str(run_dir), state="done",
               split_hash=results.get("split_hash"), version=None, host=None, pid=None, pid_start=None, attempts=1,
               error=None, started=None, ended=None, results=results)
