"""The registry on its own: claims are exclusive across processes, dead and reused pids are told apart."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sweep_helpers import claim_all

from vlprompt.engine.config import RunConfig
from vlprompt.sweep.registry import RunRegistry, host_name, process_alive, process_start


@dataclass
class Spec:
    spec_id: str
    config: RunConfig
    run_dir: Path
    protocol: str | None = None
    method: str = "coop"
    dataset: str = "world:objects"
    seed: int = 1
    keys: dict = None

    def __post_init__(self):
        self.keys = {}


def specs(n: int, tmp: Path) -> list[Spec]:
    return [Spec(f"spec{i:03d}", RunConfig.from_dict({"train": {"seed": i}}), tmp / f"spec{i:03d}") for i in range(n)]


def test_processes_claiming_at_once_get_each_spec_exactly_once(tmp_path):
    path = tmp_path / "registry.sqlite"
    todo = specs(60, tmp_path)
    RunRegistry(path).add(todo)
    ids = [s.spec_id for s in todo]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=claim_all, args=(str(path), ids, queue)) for _ in range(4)]
    for w in workers:
        w.start()
    claimed = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
    flat = [i for mine in claimed for i in mine]
    assert sorted(flat) == ids  # every spec once, none twice
    rows = RunRegistry(path).rows()
    assert all(r.state == "done" and r.attempts == 1 for r in rows)
    by = {r.spec_id: r.results["by"] for r in rows}
    assert all(by[i] == r.pid for i, r in zip(ids, rows))  # recorded by the process that claimed it


def test_running_rows_of_dead_or_reused_pids_are_claimed_again(tmp_path):
    registry = RunRegistry(tmp_path / "registry.sqlite")
    registry.add(specs(3, tmp_path))
    ids = ["spec000", "spec001", "spec002"]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = os.getpid()
    for spec_id, pid, start in (("spec000", gone.pid, None), ("spec001", me, process_start(me) + 1),
                                ("spec002", me, process_start(me))):
        registry.db.execute("UPDATE runs SET state='running', host=?, pid=?, pid_start=? WHERE spec_id=?",
                            (host_name(), pid, start, spec_id))
    assert registry.claim(ids).spec_id == "spec000"  # its process exited
    assert registry.claim(ids).spec_id == "spec001"  # its pid now belongs to a process started at another time
    assert registry.claim(ids) is None  # spec002 is held by this live process
    assert process_alive("another-host", gone.pid)  # another host's processes cannot be checked: alive
    assert not process_alive(host_name(), gone.pid)
