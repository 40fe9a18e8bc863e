"""New-user probes on runs and sweeps (issue 26 items 2, 3, 22, 23), each through the real `vlprompt` command.

2. pool workers exit when their driver is killed; 3. a run whose results.json exists is done, whoever died;
22. a folder or CSV dataset uses all of its classes in sweeps and protocols as in `train`, and a changed
dataset makes its runs stale; 23. run folders are named readably from the dataset, never cut mid-word.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

CLI = [sys.executable, "-m", "vlprompt"]


def environment(**extra) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def vlprompt(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=environment())


def registry_rows(out: Path) -> list[dict]:
    """The registry read with plain sqlite3, independently of the library."""
    with sqlite3.connect(out / "registry.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY rowid")]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet waited for, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def dead_pid() -> int:
    """The pid of a process that has exited (and been waited for)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def write_spec(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


TINY = ["train.epochs=1", "train.batch_size=8"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_pool_workers_exit_when_their_driver_is_killed(tmp_path):
    """Item 2: `run base_to_new --workers 2`, then kill -9 of the driver: both workers are gone within seconds."""
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            CLI + ["run", "base_to_new", "--methods", "coop", "--seeds", "1,2", "--workers", "2",
                   "--out", str(tmp_path / "b2n"), "train.epochs=500", "train.batch_size=8",
                   f"cache_dir={tmp_path / 'cache'}"],
            stdout=out, stderr=subprocess.STDOUT, env=environment(OMP_NUM_THREADS="2"))
    workers: list[int] = []
    try:
        deadline = time.time() + 300
        while len(workers) < 2 and time.time() < deadline and driver.poll() is None:
            workers = [int(p) for p in re.findall(r"process (\d+) runs with \d+ torch threads", log.read_text())]
            time.sleep(0.1)
        assert len(workers) == 2, log.read_text()[-3000:]
        assert all(alive(p) for p in workers)  # both are training (500 epochs: minutes, were they left alone)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 20
        while any(alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if alive(p)], "pool workers outlived their killed driver"
        assert "its sweep driver (pid %d) is gone; exiting" % driver.pid in log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in workers:  # left over only when the test fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
