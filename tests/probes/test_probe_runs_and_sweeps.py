"""New-user probes on runs and sweeps (issue 26 items 2, 3, 22, 23), each through the real `vlprompt` command.

2. pool workers exit when their driver is killed; 3. a run whose results.json exists is done, whoever died;
22. a folder or CSV dataset uses all of its classes in sweeps and protocols as in `train`, and a changed
dataset makes its runs stale; 23. run folders are named readably from the dataset, never cut mid-word.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import unicodedata
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
        assert f"its sweep driver (pid {driver.pid}) is gone; exiting" in log.read_text()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in workers:  # left over only when the test fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_status_shows_a_finished_run_of_a_killed_driver_as_done(tmp_path):
    """Item 3: a row left running by a dead driver whose results.json exists is done, not "process is gone"."""
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "sweep.yaml", out=str(out), preset="world-demo", methods=["zeroshot"],
                      datasets=["world:objects"], shots=[1], seeds=[1, 2],
                      overrides=TINY + [f"cache_dir={tmp_path / 'cache'}"])
    first = vlprompt("sweep", "run", spec)
    assert first.returncode == 0, first.stderr[-3000:]
    finished = registry_rows(out)
    # as a driver killed between its workers' last results.json and their record leaves the registry
    # (the second run has not even started: its results are gone too)
    gone = dead_pid()
    Path(finished[1]["run_dir"], "results.json").unlink()
    with sqlite3.connect(out / "registry.sqlite") as db:
        db.execute("UPDATE runs SET state='running', results=NULL, version=NULL, split_hash=NULL, ended=NULL, "
                   "pid=?, pid_start=NULL", (gone,))
    status = vlprompt("sweep", "status", out)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"done     {finished[0]['spec_id']}  attempts 1")
    assert lines[1].startswith(f"running  {finished[1]['spec_id']}") and "that process is gone" in lines[1]
    assert "1 pending" not in status.stdout and "0 pending, 1 running, 1 done, 0 failed" in status.stdout
    now = registry_rows(out)
    on_disk = json.loads(Path(finished[0]["run_dir"], "results.json").read_text())
    assert now[0]["state"] == "done" and json.loads(now[0]["results"]) == on_disk
    assert now[0]["split_hash"] == finished[0]["split_hash"] and now[0]["version"] == finished[0]["version"]
    assert now[1]["state"] == "running"
    again = vlprompt("sweep", "run", spec)  # reruns only the run that never finished
    assert again.returncode == 0 and "2 runs: 2 done" in again.stdout
    assert [r["attempts"] for r in registry_rows(out)] == [1, 2]


FOUR = ["thing a", "thing b", "thing c", "thing d"]


def test_own_data_keeps_all_classes_in_sweeps_and_protocols_and_a_changed_folder_is_stale(
        tmp_path, image_folder_factory):
    """Item 22: world-demo's base/new split stays with the world; an image added to a folder makes its runs stale."""
    images = image_folder_factory(tmp_path / "images", classnames=FOUR, per_class=3)
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "grid.yaml", out=str(out), preset="world-demo", methods=["coop"],
                      datasets=[f"folder:{images}"], shots=[1], seeds=[1],
                      overrides=TINY + [f"cache_dir={tmp_path / 'cache'}"])
    done = vlprompt("sweep", "run", spec)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = registry_rows(out)
    results = json.loads(Path(row["run_dir"], "results.json").read_text())
    assert sorted(results["metrics"]) == ["all"]  # no "new" classes scored: every class is trained on
    assert results["metrics"]["all"]["classnames"] == FOUR and results["metrics"]["all"]["num_samples"] == 12
    assert json.loads(Path(row["run_dir"], "prompt", "config.json").read_text())["classnames"] == FOUR
    # a protocol run on the same folder, through `vlprompt run`, keeps them all too
    protocol = vlprompt("run", "few_shot", "--methods", "coop", "--datasets", f"folder:{images}", "--shots", "1",
                        "--seeds", "1", "--out", tmp_path / "fs", *TINY, f"cache_dir={tmp_path / 'cache'}")
    assert protocol.returncode == 0, protocol.stderr[-3000:]
    (fs_row,) = registry_rows(tmp_path / "fs")
    assert json.loads(fs_row["results"])["metrics"]["all"]["classnames"] == FOUR
    # asked for, a base/new split of the folder is given
    b2n = write_spec(tmp_path / "b2n.yaml", out=str(tmp_path / "b2n"), preset="world-demo", methods=["coop"],
                     datasets=[f"folder:{images}"], shots=[1], seeds=[1],
                     overrides=TINY + ["data.subsample=base", "data.eval_subsets=[base,new]",
                                       f"cache_dir={tmp_path / 'cache'}"])
    assert vlprompt("sweep", "run", b2n).returncode == 0
    split = json.loads(registry_rows(tmp_path / "b2n")[0]["results"])["metrics"]
    assert (split["base"]["classnames"], split["new"]["classnames"]) == (FOUR[:2], FOUR[2:])

    assert "0 stale (of 1 runs)" in vlprompt("sweep", "status", out).stdout
    # one more test image of the last class: the recorded accuracy no longer stands for this folder
    shutil.copyfile(images / "test" / "thing d" / "0.png", images / "test" / "thing d" / "extra.png")
    status = vlprompt("sweep", "status", out)
    assert f"stale    {row['spec_id']}" in status.stdout and "its data changed" in status.stdout
    assert "1 stale (of 1 runs)" in status.stdout
    rerun = vlprompt("sweep", "run", spec, "--rerun-stale")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (after,) = registry_rows(out)
    assert after["attempts"] == 2 and json.loads(after["results"])["metrics"]["all"]["num_samples"] == 13
    assert "0 stale (of 1 runs)" in vlprompt("sweep", "status", out).stdout


def test_run_folders_are_named_readably_from_a_long_unicode_dataset_path(tmp_path, image_folder_factory):
    """Item 23: the dataset's part of a run folder's name is its folder's name, cut after a whole word."""
    # the folder's name as macOS writes it (decomposed accents), deep below other folders
    name = unicodedata.normalize("NFD", "Ölgemälde der Großeltern aus dem Nachlass von 1923")
    images = image_folder_factory(tmp_path / "Fotos" / "Familie" / name, classnames=["Bild a", "Bild b"],
                                  per_class=3)
    done = vlprompt("train", "--preset", "world-demo", "learner.name=coop", *TINY, f"data.dataset=folder:{images}",
                    f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch("coop_folder-Ölgemälde_der_Großeltern_aus_dem_seed1_[0-9a-f]{12}", run_dir.name), run_dir.name
    assert json.loads((run_dir / "results.json").read_text())["run_dir"] == str(run_dir)
