"""Sweeps in real processes: idempotent reruns, killed and concurrent drivers, failures, stale runs."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from sweep_helpers import (
    CLI,
    env,
    epochs_trained,
    folder_spec,
    registry_rows,
    result_stamps,
    start,
    vlprompt,
    write_spec,
)

import vlprompt as package
from vlprompt.cli.main import main


def test_world_sweep_run_twice_does_no_work_the_second_time(tmp_path):
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "world.yaml", out=str(out), preset="world-demo", methods=["zeroshot", "coop"],
                      datasets=["world:objects"], shots=[1], seeds=[1, 2],
                      overrides=["train.epochs=1", "train.batch_size=8", f"cache_dir={tmp_path / 'cache'}"])
    first = vlprompt("sweep", "run", spec)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "4 runs: 4 done, 0 failed" in first.stdout
    rows = registry_rows(out)
    assert [(r["method"], r["seed"], r["state"], r["attempts"]) for r in rows] == [
        ("zeroshot", 1, "done", 1), ("zeroshot", 2, "done", 1), ("coop", 1, "done", 1), ("coop", 2, "done", 1)]
    for r in rows:  # each row holds the results its run directory holds
        on_disk = json.loads((Path(r["run_dir"]) / "results.json").read_text())
        assert json.loads(r["results"]) == on_disk
        assert r["config_hash"] == on_disk["run_id"] and r["split_hash"] == on_disk["split_hash"]
        assert r["version"] == package.__version__ and r["ended"] >= r["started"]
    stamps = result_stamps(out)
    assert len(stamps) == 4
    again = vlprompt("sweep", "run", spec)
    assert again.returncode == 0 and "4 runs: 4 done" in again.stdout
    assert result_stamps(out) == stamps
    assert registry_rows(out) == rows  # not claimed, not restarted: the same rows to the byte
    assert "(attempt" not in again.stderr  # no run was started


def test_killed_sweep_rerun_finishes_only_the_missing_runs(tmp_path, images):
    spec = folder_spec(tmp_path, images)
    out = tmp_path / "out"
    proc = start("sweep", "run", spec)
    deadline = time.time() + 600
    while time.time() < deadline:
        if (out / "registry.sqlite").exists():
            try:
                if any(r["state"] == "done" for r in registry_rows(out)):
                    break
            except sqlite3.OperationalError:  # the table is being created
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r["spec_id"]: r for r in registry_rows(out)}
    done_before = {k for k, r in before.items() if r["state"] == "done"}
    assert 1 <= len(done_before) < 4
    assert all(r["state"] in ("done", "running", "pending") for r in before.values())
    status = vlprompt("sweep", "status", out).stdout
    for spec_id in (k for k, r in before.items() if r["state"] == "running"):  # held by the killed driver
        assert f"running  {spec_id}  attempts 1  pid {proc.pid} on " in status and "that process is gone" in status
    stamps = result_stamps(out)
    rerun = vlprompt("sweep", "run", spec)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = {r["spec_id"]: r for r in registry_rows(out)}
    assert set(after) == set(before) and all(r["state"] == "done" for r in after.values())
    for spec_id in done_before:  # finished runs were neither rerun nor re-recorded
        assert after[spec_id] == before[spec_id]
    for spec_id, r in after.items():
        assert r["attempts"] == before[spec_id]["attempts"] + (spec_id not in done_before)
        assert epochs_trained(Path(r["run_dir"]))[-1] == 2
    new_stamps = result_stamps(out)
    assert len(new_stamps) == 4 and all(new_stamps[k] == t for k, t in stamps.items())


def test_two_sweep_processes_at_once_run_every_spec_exactly_once(tmp_path, images):
    spec = folder_spec(tmp_path, images, seeds=[1, 2, 3])
    out = tmp_path / "out"
    # one driver with a local pool of two workers sharing 4 threads, one running in-process
    procs = [start("sweep", "run", spec, "--workers", "2", log=tmp_path / "log0", OMP_NUM_THREADS="4"),
             start("sweep", "run", spec, log=tmp_path / "log1")]
    for p in procs:
        assert p.wait(timeout=900) == 0, (tmp_path / "log0").read_text()[-2000:]
    rows = registry_rows(out)
    assert len(rows) == 6 and all(r["state"] == "done" and r["attempts"] == 1 for r in rows)
    assert {r["pid"] for r in rows} <= {p.pid for p in procs}
    run_dirs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
    assert sorted(Path(r["run_dir"]) for r in rows) == run_dirs
    for d in run_dirs:
        assert epochs_trained(d) == [1, 2]  # trained once: no second process appended epochs
    logs = [(tmp_path / f"log{i}").read_text() for i in range(2)]
    started = [line for log in logs for line in log.splitlines() if "(attempt 1)" in line]
    assert len(started) == 6 and len({line.split("run ")[-1] for line in started}) == 6
    pool_runs = sum(r["pid"] == procs[0].pid for r in rows)
    threads = re.findall(r"process (\d+) runs with (\d+) torch threads", logs[0])
    assert pool_runs >= 1 and len(threads) == pool_runs and all(n == "2" for _, n in threads)  # 4 threads over 2 workers
    assert not re.findall(r"process \d+ runs with \d+ torch threads", logs[1])  # in-process runs keep the process's threads


def test_a_run_that_raises_is_recorded_failed_and_the_rest_completes(tmp_path, images):
    missing = tmp_path / "no-such-folder"
    spec = folder_spec(tmp_path, images, datasets=[f"folder:{images}", f"folder:{missing}"], shots=[1], seeds=[1])
    out = tmp_path / "out"
    done = vlprompt("sweep", "run", spec)
    assert done.returncode == 1
    rows = {r["dataset"]: r for r in registry_rows(out)}
    assert rows[f"folder:{images}"]["state"] == "done"
    failed = rows[f"folder:{missing}"]
    assert failed["state"] == "failed" and str(missing) in failed["error"] and failed["error"].startswith("DataError")
    assert f"failed {failed['spec_id']}: DataError" in done.stdout
    status = vlprompt("sweep", "status", out)
    assert f"failed   {failed['spec_id']}" in status.stdout and "1 done, 1 failed" in status.stdout
    again = vlprompt("sweep", "run", spec)  # a failure stays recorded until asked to retry
    assert again.returncode == 1 and registry_rows(out) == list(rows.values())
    retried = vlprompt("sweep", "run", spec, "--retry-failed")
    assert retried.returncode == 1
    assert [r["attempts"] for r in registry_rows(out)] == [1, 2]


def test_changed_split_or_version_marks_runs_stale_and_reruns_them_on_request(tmp_path, images):
    spec = folder_spec(tmp_path, images, shots=[2], seeds=[1, 2])
    out = tmp_path / "out"
    assert vlprompt("sweep", "run", spec).returncode == 0
    rows = {r["seed"]: r for r in registry_rows(out)}
    clean = vlprompt("sweep", "status", out)
    assert "0 stale" in clean.stdout and "2 done" in clean.stdout
    # pin another few-shot selection for seed 1: one image of a class swapped for an unselected one
    (split_file,) = (tmp_path / "cache" / "splits").glob("*_2shot_seed1_*.json")
    split = json.loads(split_file.read_text())
    chosen = {tuple(x) for x in split["train"]}
    label = split["train"][0][1]
    spare = next(str(p) for p in sorted((images / "train" / f"thing {'abcd'[label]}").iterdir())
                 if (str(p), label) not in chosen)
    split["train"][0] = [spare, label]
    split_file.write_text(json.dumps(split))
    status = vlprompt("sweep", "status", out)
    assert f"stale    {rows[1]['spec_id']}" in status.stdout and "its data changed (the sampled training split" in status.stdout
    assert f"done     {rows[2]['spec_id']}" in status.stdout and "1 stale" in status.stdout
    stamps = result_stamps(out)
    assert vlprompt("sweep", "run", spec).returncode == 0
    assert result_stamps(out) == stamps  # stale runs are kept until asked
    assert vlprompt("sweep", "run", spec, "--rerun-stale").returncode == 0
    after = {r["seed"]: r for r in registry_rows(out)}
    assert after[2] == rows[2] and after[1]["attempts"] == 2 and after[1]["split_hash"] != rows[1]["split_hash"]
    recorded = json.loads((Path(after[1]["run_dir"]) / "results.json").read_text())
    assert recorded["split_hash"] == after[1]["split_hash"] and epochs_trained(Path(after[1]["run_dir"])) == [1, 2]
    # runs recorded by another vlprompt version are stale too
    with sqlite3.connect(out / "registry.sqlite") as db:
        db.execute("UPDATE runs SET version='0.0.1'")
    status = vlprompt("sweep", "status", out)
    assert status.stdout.count(f"recorded with vlprompt 0.0.1, now {package.__version__}") == 2
    assert vlprompt("sweep", "run", spec, "--rerun-stale").returncode == 0
    assert [r["version"] for r in registry_rows(out)] == [package.__version__] * 2
    assert [r["attempts"] for r in registry_rows(out)] == [3, 2]  # seed 1: first run, new split, new version


def test_bad_spec_is_refused_by_name(tmp_path, images, capsys):
    spec = folder_spec(tmp_path, images, colour="red")
    assert main(["sweep", "run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'colour'" in err and str(spec) in err
    assert main(["sweep", "run", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml does not exist" in capsys.readouterr().err
    assert main(["sweep", "status", str(tmp_path / "nowhere")]) == 2
    assert "no run registry" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_text("not a database, just text " * 100)
    assert main(["report", str(tmp_path / "junk.sqlite")]) == 2
    assert "junk.sqlite is not a vlprompt run registry" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "nowhere").exists()


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, images):
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)  # a `ray` package that fails to import, as on a machine without the extra
    (blocker / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    environment = env()
    environment["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), environment.get("PYTHONPATH", "")])
    done = subprocess.run(CLI + ["sweep", "run", str(folder_spec(tmp_path, images)), "--executor", "ray"],
                          capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 2 and "pip install 'vlprompt[ray]'" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was registered
