"""The command line end to end, in real processes: train, rerun, kill and resume, eval, predict, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

CLI = [sys.executable, "-m", "vlprompt.cli.main"]


def vlprompt(*args, cwd, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(CLI + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, image_folder_factory):
    root = tmp_path_factory.mktemp("cli")
    image_folder_factory(root / "images", per_class=4)
    return root


def train_args(workspace, *extra):
    return ["train", f"data.dataset=folder:{workspace / 'images'}", "data.shots=3", "backbone.pretrained=null",
            "learner.name=coop", "learner.options.n_ctx=2", "train.epochs=3", "train.batch_size=4",
            f"cache_dir={workspace / 'cache'}", *extra]


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir())


def test_train_writes_a_complete_run_directory_and_reruns_do_nothing(workspace):
    out = workspace / "runs1"
    first = vlprompt(*train_args(workspace, f"output_dir={out}"), cwd=workspace)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = run_dirs(out)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock", "analysis.json", "checkpoint.pt", "config.yaml", "metrics.jsonl", "metrics_curves.png",
        "neural_collapse.json", "prompt", "results.json"]
    assert (run_dir / ".lock").read_text() == ""  # released: no holder named
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["metrics"]["all"]["num_samples"] == 5 * 4
    assert "accuracy" in first.stdout and str(run_dir) in first.stdout
    stamp = (run_dir / "results.json").stat().st_mtime_ns
    second = vlprompt(*train_args(workspace, f"output_dir={out}"), cwd=workspace)
    assert second.returncode == 0 and "skipping" in second.stderr
    assert (run_dir / "results.json").stat().st_mtime_ns == stamp


def test_killed_run_resumes_to_the_same_prompt(workspace):
    straight, killed = workspace / "straight", workspace / "killed"
    args = ["train.epochs=40"]
    assert vlprompt(*train_args(workspace, f"output_dir={straight}", *args), cwd=workspace).returncode == 0
    proc = subprocess.Popen(CLI + train_args(workspace, f"output_dir={killed}", *args), cwd=workspace,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(killed.glob("*/checkpoint.pt")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = run_dirs(killed)
    assert not (run_dir / "results.json").exists(), "the run finished before it could be killed"
    resumed = vlprompt(*train_args(workspace, f"output_dir={killed}", *args), cwd=workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stderr
    a = load_file(str(run_dirs(straight)[0] / "prompt" / "prompt.safetensors"))["ctx"]
    b = load_file(str(run_dir / "prompt" / "prompt.safetensors"))["ctx"]
    assert (a == b).all()


def test_eval_and_predict_use_the_saved_prompt(workspace):
    out = workspace / "runs1"
    if not out.exists():
        assert vlprompt(*train_args(workspace, f"output_dir={out}"), cwd=workspace).returncode == 0
    prompt = run_dirs(out)[0] / "prompt"
    evaluated = vlprompt("eval", "--prompt", str(prompt), "--dataset", f"folder:{workspace / 'images'}",
                         cwd=workspace)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((run_dirs(out)[0] / "results.json").read_text())
    assert f"accuracy {results['metrics']['all']['accuracy']:.2f}%" in evaluated.stdout
    images = sorted((workspace / "images" / "test" / "red circle").iterdir())[:2]
    predicted = vlprompt("predict", "--prompt", str(prompt), "--top-k", "2", *map(str, images), cwd=workspace)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(str(workspace)) for line in lines)
    assert all(line.count("%") == 2 for line in lines)


def test_bad_input_gives_a_clear_error_and_exit_code(workspace):
    bad = vlprompt(*train_args(workspace, "train.epoch=3"), cwd=workspace)
    assert bad.returncode == 2 and "train.epoch" in bad.stderr and "Traceback" not in bad.stderr
    missing = vlprompt("predict", "--prompt", str(workspace / "nope"), "x.png", cwd=workspace)
    assert missing.returncode == 2 and "config.json not found" in missing.stderr


def test_model_selection_is_recorded_and_best_val_keeps_the_best_epoch(workspace, image_folder_factory):
    out = workspace / "selection"
    done = vlprompt(*train_args(workspace, f"output_dir={out}", "train.model_selection=best_val", "train.lr=0.5"),
                    cwd=workspace)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = run_dirs(out)
    results = json.loads((run / "results.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    accuracies = [r["val_accuracy"] for r in history]
    best = accuracies.index(max(accuracies))  # the first best epoch, from the per-epoch log
    assert results["model_selection"] == {"rule": "best_val", "epoch": best + 1, "val_accuracy": accuracies[best]}
    last = vlprompt(*train_args(workspace, f"output_dir={workspace / 'last'}"), cwd=workspace)
    assert last.returncode == 0
    (run,) = run_dirs(workspace / "last")
    assert json.loads((run / "results.json").read_text())["model_selection"] == {"rule": "last", "epoch": 3}
    no_val = image_folder_factory(workspace / "no_val", per_class=4)
    for image in (no_val / "val").rglob("*.png"):  # the split is given, and its val part is empty
        image.unlink()
    refused = vlprompt(*train_args(workspace, f"data.dataset=folder:{no_val}", f"output_dir={workspace / 'nv'}",
                                   "train.model_selection=best_val"), cwd=workspace)
    assert refused.returncode == 2 and "train.model_selection=best_val" in refused.stderr
    assert not (workspace / "nv").exists()
    searching = vlprompt("train", f"data.dataset=folder:{no_val}", "backbone.pretrained=null", "learner.name=tip_adapter",
                         f"output_dir={workspace / 'nv'}", f"cache_dir={workspace / 'cache'}", cwd=workspace)
    assert searching.returncode == 2 and "tip_adapter chooses its hyper-parameters on the validation split" in \
        searching.stderr
    assert not (workspace / "nv").exists()
