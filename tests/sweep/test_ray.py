"""The Ray executor on a local Ray instance: the same results as the local pool, and a run whose worker
process is killed is retried by Ray and the sweep completes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sweep_helpers import epochs_trained, folder_spec, registry_rows, vlprompt

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'vlprompt[ray]' (CI installs it)")

from vlprompt.sweep.executors import RayExecutor  # noqa: E402
from vlprompt.sweep.runner import run_sweep  # noqa: E402
from vlprompt.sweep.spec import load_spec  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def metrics_by_run(out: Path) -> dict[str, dict]:
    return {r["config_hash"]: json.loads(r["results"])["metrics"] for r in registry_rows(out)}


def test_ray_sweep_gives_the_local_pools_results(tmp_path, images, local_ray):
    pool_spec = folder_spec(tmp_path, images, name="pool.yaml", out=str(tmp_path / "pool"))
    done = vlprompt("sweep", "run", pool_spec, "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    _, plans = load_spec(folder_spec(tmp_path, images, name="ray.yaml", out=str(tmp_path / "ray")))
    rows = run_sweep(plans, executor=RayExecutor(cpus_per_run=1, retries=1))
    assert [r.state for r in rows] == ["done"] * 4
    assert {r.pid for r in rows} == {os.getpid()}  # the driver holds the rows; Ray workers ran them
    pool, on_ray = metrics_by_run(tmp_path / "pool"), metrics_by_run(tmp_path / "ray")
    assert set(pool) == set(on_ray) and len(pool) == 4
    for run_id, metrics in pool.items():
        assert on_ray[run_id]["all"]["accuracy"] == pytest.approx(metrics["all"]["accuracy"], abs=1e-9)
        assert on_ray[run_id]["all"]["classnames"] == metrics["all"]["classnames"]


def test_a_killed_ray_task_is_retried_and_the_sweep_completes(tmp_path, images, local_ray):
    _, plans = load_spec(folder_spec(tmp_path, images, shots=[2], seeds=[1, 2],
                                     overrides=["backbone.pretrained=null", "train.epochs=6", "train.batch_size=1",
                                                "data.subsample=all", "data.eval_subsets=[all]",
                                                f"cache_dir={tmp_path / 'cache'}"]))
    outcome = {}
    driver = threading.Thread(target=lambda: outcome.setdefault(
        "rows", run_sweep(plans, executor=RayExecutor(cpus_per_run=1, retries=2))))
    driver.start()
    killed = None
    deadline = time.time() + 600
    while killed is None and time.time() < deadline and driver.is_alive():
        for lock in (tmp_path / "out" / "runs").glob("*/.lock"):
            try:
                holder = json.loads(lock.read_text() or "{}")
            except ValueError:
                continue
            if holder.get("pid") and holder["pid"] != os.getpid():
                os.kill(holder["pid"], signal.SIGKILL)  # the Ray worker process running this spec
                killed = (lock.parent, holder["pid"])
                break
        time.sleep(0.01)
    driver.join(timeout=900)
    assert killed is not None, "no run was seen running"
    rows = outcome["rows"]
    assert [r.state for r in rows] == ["done", "done"], [r.error for r in rows]
    run_dir, pid = killed
    (row,) = [r for r in rows if Path(r.run_dir) == run_dir]
    assert row.attempts == 1  # retried by Ray within one claim, not by a second sweep
    assert json.loads((run_dir / ".lock").read_text() or "{}").get("pid") != pid
    assert epochs_trained(run_dir)[-1] == 6 and (run_dir / "results.json").is_file()
