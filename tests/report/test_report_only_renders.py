"""The report only reads and renders: a real sweep's runs pass through the analysis stage as they finish,
writing the report runs no model code and imports none (no torch, open_clip, learners, backbones or
engine, through ``write_report`` or ``vlprompt report``), a run without analyses gets the command instead
of a computation, and writing the report again renders only the pages whose run changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from html_page import parse

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweep"))
from sweep_helpers import SMALL, env, registry_rows, vlprompt, write_spec  # noqa: E402

ANALYSIS_OUTPUTS = ("analysis.json", "metrics_curves.png", "neural_collapse.json")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, image_folder_factory):
    root = tmp_path_factory.mktemp("renders")
    images = image_folder_factory(root / "images", per_class=3)
    out = root / "out"
    spec = write_spec(root / "spec.yaml", out=str(out), preset="world-methods", methods=["coop", "coop+nemesis-pun"],
                      datasets=[f"folder:{images}"], shots=[1], seeds=[1, 2],
                      overrides=SMALL + ["data.subsample=all", "data.eval_subsets=[all]", f"cache_dir={root / 'cache'}"])
    done = vlprompt("sweep", "run", spec)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, images


def run_dirs(out: Path) -> dict[str, Path]:
    return {r["spec_id"]: Path(r["run_dir"]) for r in registry_rows(out) if r["state"] == "done"}


def test_sweep_runs_pass_through_the_analysis_stage(sweep):
    out, _ = sweep
    dirs = run_dirs(out)
    assert len(dirs) == 4
    for run_dir in dirs.values():
        record = json.loads((run_dir / "analysis.json").read_text())
        assert record["results_sha256"] == hashlib.sha256((run_dir / "results.json").read_bytes()).hexdigest()
        nemesis = json.loads((run_dir / "results.json").read_text())["regularizers"] == ["nemesis"]
        assert set(record["written"]) == {"training curves", "neural collapse", *(["prompt norms"] if nemesis else [])}
        assert all((run_dir / name).is_file() for name in record["written"].values())


# Runs in a fresh interpreter: imports the report module, records every Python function called while the
# report is written, and lists every module imported by then.
REPORT_SCRIPT = """
import json, sys
from vlprompt.report.html import write_report

calls = set()
def record(frame, event, arg):
    if event == "call":
        calls.add((frame.f_code.co_filename, frame.f_code.co_name))
sys.setprofile(record)
write_report(sys.argv[1], sys.argv[2])
sys.setprofile(None)
print(json.dumps({"calls": sorted(calls), "modules": sorted(sys.modules)}))
"""


# `vlprompt report` through the command line's entry point in a fresh interpreter, then every module imported.
CLI_SCRIPT = """
import json, sys
from vlprompt.cli.main import main
status = main(["report", *sys.argv[1:]])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def report_in_subprocess(where: Path, report: Path, script: str = REPORT_SCRIPT) -> dict:
    done = subprocess.run([sys.executable, "-c", script, str(where), *([str(report)] if script == REPORT_SCRIPT
                                                                       else ["--out", str(report)])],
                          capture_output=True, text=True, timeout=600, env=env())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def model_modules(modules: list[str]) -> list[str]:
    """The modules among ``modules`` that hold or load models: torch, open_clip, the learners, the backbones,
    and the engine that builds and trains them."""
    return [m for m in modules if m.split(".")[0] in ("torch", "open_clip")
            or m.startswith(("vlprompt.learners", "vlprompt.backbones", "vlprompt.engine"))]


def test_writing_a_report_runs_no_model_and_no_analysis(sweep, tmp_path):
    out, _ = sweep
    seen = report_in_subprocess(out, tmp_path / "report")
    package = str(Path(__import__("vlprompt").__file__).parent)
    model_code = [(f, name) for f, name in seen["calls"]
                  if f.startswith(os.path.join(package, "backbones"))  # no backbone built or loaded
                  or f.startswith(os.path.join(package, "analysis")) and not f.endswith("outputs.py")
                  or f.endswith(os.path.join("learners", "artifact.py"))  # no prompt artifact read
                  or f.endswith(os.path.join("data", "feature_cache.py"))  # no image encoded
                  or f.endswith(os.path.join("torch", "nn", "modules", "module.py")) and name == "__init__"]
    assert model_code == []
    analyses = {"vlprompt.analysis.run_analysis", "vlprompt.analysis.neural_collapse", "vlprompt.analysis.corruption",
                "vlprompt.analysis.prompt_norms", "vlprompt.analysis.metric_curves"}
    assert analyses.isdisjoint(seen["modules"])
    assert model_modules(seen["modules"]) == []  # not even imported
    for spec_id, run_dir in run_dirs(out).items():  # and the pages show what the stage wrote
        page = parse(tmp_path / "report" / "runs" / f"{spec_id}.html")
        assert f"../img/{spec_id}_metrics.png" in page.images
        assert any(t[0][0] == "Evaluated on" and "nc1" in t[0] for t in page.tables)
        assert (tmp_path / "report" / "img" / f"{spec_id}_metrics.png").read_bytes() == \
            (run_dir / "metrics_curves.png").read_bytes()


def test_the_report_command_imports_no_model_code(sweep, tmp_path):
    out, _ = sweep
    seen = report_in_subprocess(out, tmp_path / "report", script=CLI_SCRIPT)
    assert seen["status"] == 0 and (tmp_path / "report" / "index.html").is_file()
    assert len(list((tmp_path / "report" / "runs").glob("*.html"))) == len(run_dirs(out))
    assert model_modules(seen["modules"]) == []


def test_a_run_without_analyses_gets_the_command_then_shows_them(sweep, tmp_path):
    out, _ = sweep
    coop = next(r for r in registry_rows(out) if r["method"] == "coop")  # no prompt norms: one figure in all
    spec_id, source = coop["spec_id"], Path(coop["run_dir"])
    run_dir = tmp_path / "runs" / spec_id
    shutil.copytree(source, run_dir)
    for name in ANALYSIS_OUTPUTS:  # a run made before the analysis stage existed
        (run_dir / name).unlink()
    seen = report_in_subprocess(tmp_path / "runs", tmp_path / "report")
    assert not any(f.endswith(os.path.join("learners", "artifact.py")) for f, _ in seen["calls"])
    text = (tmp_path / "report" / "runs" / f"{spec_id}.html").read_text()
    assert "analysis not run on this run's results" in text and f"<code>vlprompt analyze run {run_dir}</code>" in text
    assert parse(tmp_path / "report" / "runs" / f"{spec_id}.html").images == []
    assert all(not (run_dir / name).exists() for name in ANALYSIS_OUTPUTS)  # the report computed nothing
    analysed = vlprompt("analyze", "run", run_dir)
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    assert vlprompt("report", tmp_path / "runs", "--out", tmp_path / "report").returncode == 0
    page = parse(tmp_path / "report" / "runs" / f"{spec_id}.html")
    assert page.images == [f"../img/{spec_id}_metrics.png"]
    assert "analysis not run" not in (tmp_path / "report" / "runs" / f"{spec_id}.html").read_text()


def inodes(report: Path) -> dict[str, int]:
    return {str(p.relative_to(report)): p.stat().st_ino for p in report.rglob("*") if p.is_file()}


def test_writing_the_report_again_renders_only_the_changed_runs_page(sweep, tmp_path):
    out, images = sweep
    report = tmp_path / "report"
    assert vlprompt("report", out, "--out", report).returncode == 0
    before = inodes(report)
    again = vlprompt("report", out, "--out", report)  # nothing changed: every page carried over
    assert again.returncode == 0, again.stderr[-3000:]
    after = inodes(report)
    pages = [name for name in before if name.startswith(("runs/", "img/"))]
    assert len(pages) >= 4 + 4 and all(after[name] == before[name] for name in pages)
    assert after["index.html"] != before["index.html"]  # the index is always rendered
    coop = next(r for r in registry_rows(out) if r["method"] == "coop" and r["seed"] == 1)
    analysed = vlprompt("analyze", "corruption", "--prompt", Path(coop["run_dir"]) / "prompt",
                        "--dataset", f"folder:{images}")  # the run changes after it finished: the registry can't tell
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    assert vlprompt("report", out, "--out", report).returncode == 0
    changed = inodes(report)
    mine = f"runs/{coop['spec_id']}.html"
    assert changed[mine] != after[mine]
    assert any(t[0][0] == "original accuracy (%)" for t in parse(report / mine).tables)
    assert f"img/{coop['spec_id']}_corruption.png" in changed
    assert [name for name in pages if changed[name] != after[name]] == [mine]
