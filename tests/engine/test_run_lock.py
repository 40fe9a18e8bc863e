"""Single-run exclusion: two `vlprompt train` processes on one run directory never both train it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vlprompt.engine.config import resolve_config
from vlprompt.engine.run import run_dir_of
from vlprompt.engine.run_lock import RunLocked, hold_run

CLI = [sys.executable, "-m", "vlprompt.cli.main"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, image_folder_factory):
    root = tmp_path_factory.mktemp("lock")
    image_folder_factory(root / "images", per_class=3)
    return root


def overrides(workspace, out):
    return [f"data.dataset=folder:{workspace / 'images'}", "data.shots=2", "backbone.pretrained=null",
            "learner.name=coop", "learner.options.n_ctx=2", "train.epochs=2", "train.batch_size=4",
            f"cache_dir={workspace / 'cache'}", f"output_dir={out}"]


def start_train(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(CLI + ["train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def test_lock_names_its_holder_and_times_out(tmp_path):
    with hold_run(tmp_path / "run"):
        with pytest.raises(RunLocked, match=f"pid {os.getpid()} on host "):
            with hold_run(tmp_path / "run", timeout=0.3):
                pass
    with hold_run(tmp_path / "run", timeout=0):  # released: free at once
        pass


def test_second_train_waits_or_names_the_holder(workspace, tmp_path):
    args = overrides(workspace, tmp_path / "runs")
    run_dir = run_dir_of(resolve_config(None, args))
    with hold_run(run_dir):  # this test process holds the run
        refused = start_train([*args, "--lock-timeout", "0.5"])
        _, err = refused.communicate(timeout=300)
        assert refused.returncode == 2
        assert f"is held by pid {os.getpid()}" in err and str(run_dir) in err
        assert not (run_dir / "results.json").exists()
    # two processes at once: one trains, the other waits for it and then finds its results
    first, second = start_train(args), start_train(args)
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    logs = [err for _, err in outputs]
    assert sum("waiting for it" in e for e in logs) <= 1
    assert sum("skipping" in e for e in logs) == 1  # exactly one of them did not train
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs)) and len(epochs) == 2  # each epoch trained once
    assert json.loads((run_dir / "results.json").read_text())["run_dir"] == str(run_dir)
