"""Run states in the report: a run whose process died is interrupted, not running (a registry written the way
a sweep writes it; the dead process is a real one that has exited)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

from html_page import parse
from test_paper_columns import finish

from vlprompt.engine.config import load_preset
from vlprompt.protocols.few_shot import plan_few_shot
from vlprompt.report.html import write_report
from vlprompt.sweep.registry import RunRegistry


def dead_pid() -> int:
    """The pid of a process that has exited and been waited for."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_run_held_by_a_dead_process_is_interrupted_and_a_live_one_running(tmp_path):
    out = tmp_path / "out"
    plans = plan_few_shot(["zeroshot"], ["world:objects"], [1], [1, 2, 3, 4], load_preset("world-demo"), out_dir=out)
    reg = RunRegistry(out)
    try:
        reg.add(plans)
        finish(reg, plans[0], 0, 0, {"all": {"accuracy": 40.0, "macro_f1": 0.0, "num_samples": 10}})
        held = [reg.claim([p.spec_id]).spec_id for p in plans[1:3]]  # held by this test's process: alive
    finally:
        reg.close()
    with sqlite3.connect(out / "registry.sqlite") as db:  # as a driver killed mid-run leaves its row
        db.execute("UPDATE runs SET pid=?, pid_start=NULL WHERE spec_id=?", (dead_pid(), held[1]))
    index = write_report(out, tmp_path / "report")
    assert "1 done, 0 failed, 1 running, 1 interrupted, 1 pending</p>" in index.read_text()
    page = parse(index)
    runs = next(t for t in page.tables if t[0][:2] == ["Run", "State"])
    assert {row[0]: row[1] for row in runs[1:]} == {plans[0].spec_id: "done", held[0]: "running",
                                                  held[1]: "interrupted", plans[3].spec_id: "pending"}
