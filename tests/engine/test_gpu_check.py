"""The GPU check (benchmarks/gpu_check.py) on a machine without CUDA: it says so in one line, runs every
part on the CPU, small, and writes its results; a spent time budget skips cases and still leaves complete
results files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
PARTS = ["methods", "train", "torchrun", "parity", "benchmark"]


def run_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    # on a CUDA machine the suite checks the CPU path too (the GPU run is `make gpu-check`)
    device = ["--device", "cpu"] if torch.cuda.is_available() else []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *device, *args], capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.mark.slow
def test_without_cuda_the_check_runs_its_cpu_parts_and_writes_results(tmp_path):
    proc = run_check(tmp_path / "out")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    assert "only its CPU parts" in first and ("no CUDA device" in first or "--device cpu" in first)
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = report["results"]
    assert report["meta"]["mode"] == "quick" and report["meta"]["in_progress"] is None
    assert [p for p in PARTS if any(r["part"] == p for r in rows)] == PARTS
    assert all(r["status"] == "pass" for r in rows), [r for r in rows if r["status"] != "pass"]
    assert report["meta"]["counts"] == {"pass": len(rows), "fail": 0, "skipped": 0}
    methods = [r["case"] for r in rows if r["part"] == "methods"]
    assert {c.split()[-1] for c in methods} == {"fp32", "fp16", "bf16"} and len(methods) % 3 == 0
    assert all(len(r["losses"]) == 2 for r in rows if r["part"] == "methods")  # two steps each
    pinned = next(r for r in rows if r["case"].startswith("pinned"))
    assert pinned["pinned"] is False  # pinned memory is for copies to a GPU
    assert any("joined with gloo" in r["summary"] for r in rows if r["part"] == "torchrun")
    bench = [r for r in rows if r["part"] == "benchmark"]
    assert {r["learner"] for r in bench} == {"coop", "cocoop", "maple"}
    assert all(r[w]["steps_per_s"] > 0 and r[w]["peak_gib"] is None for r in bench for w in ("naive", "vlprompt"))
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| learner | classes | precision | batch | naive steps/s |" in table
    assert table.count("\n| ") == 2 + len(bench) + len(rows)  # two header rows and one row per case


def test_a_spent_time_budget_skips_the_cases_and_leaves_complete_results(tmp_path):
    proc = run_check(tmp_path / "out", "--parts", "methods,parity", "--budget-scale", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["results"] and all(r["status"] == "skipped" for r in report["results"])
    assert {r["part"] for r in report["results"]} == {"methods", "parity"}
    assert "skipped" in (tmp_path / "out" / "gpu_check.md").read_text()


def test_a_part_that_does_not_exist_is_refused(tmp_path):
    proc = run_check(tmp_path / "out", "--parts", "methods,speed")
    assert proc.returncode == 2
    assert "--parts speed is not a part; choose from: methods, train, torchrun, parity, benchmark" in proc.stderr
    assert not (tmp_path / "out").exists()
