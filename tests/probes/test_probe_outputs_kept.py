"""New-user probe 1: an output folder never costs the user a file.

`export --out`, `save_pretrained` and `report --out` write whole folders. Each replaces an earlier output
of its own kind, and refuses (exit 2, nothing touched) a folder that holds anything else, `.` included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlprompt.errors import VlpromptError
from vlprompt.learners.artifact import save_pretrained
from vlprompt.learners.coop import CoOp


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with the bytes of its files (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def vlprompt_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlprompt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def prompt(tiny_backbone, classnames, tmp_path):
    return save_pretrained(CoOp(tiny_backbone, classnames, n_ctx=2), tmp_path / "prompt")


@pytest.fixture
def precious(tmp_path):
    folder = tmp_path / "precious"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.txt").write_text("three years of work")
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return folder


def test_export_refuses_a_users_folder_and_leaves_it_untouched(prompt, precious):
    before = snapshot(precious)
    done = vlprompt_cli("export", "--prompt", str(prompt), "--out", str(precious), cwd=precious.parent)
    assert done.returncode == 2, done.stderr
    assert "is not a vlprompt exported classifier" in done.stderr and "Traceback" not in done.stderr
    assert snapshot(precious) == before


def test_export_to_the_current_folder_deletes_nothing(prompt, precious):
    before = snapshot(precious)
    done = vlprompt_cli("export", "--prompt", str(prompt), "--out", ".", cwd=precious)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert snapshot(precious) == before
    assert [p.name for p in precious.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_export_replaces_its_own_earlier_export_and_writes_into_an_empty_folder(prompt, tmp_path):
    out = tmp_path / "clf"
    out.mkdir()
    assert vlprompt_cli("export", "--prompt", str(prompt), "--out", str(out), cwd=tmp_path).returncode == 0
    first = snapshot(out)
    done = vlprompt_cli("export", "--prompt", str(prompt), "--classes", "red circle,yellow star", "--out", str(out),
                        cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(snapshot(out)) == sorted(first) == [  # the embedded backbone travels with its classifier
        "backbone", "backbone/open_clip_config.json", "backbone/open_clip_model.safetensors", "classifier.json",
        "classifier.safetensors"]
    assert snapshot(out) != first  # two classes now, not five
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_save_pretrained_refuses_a_users_folder_and_replaces_its_own(tiny_backbone, classnames, precious, tmp_path):
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    before = snapshot(precious)
    with pytest.raises(VlpromptError, match="is not a vlprompt saved prompt"):
        save_pretrained(learner, precious)
    assert snapshot(precious) == before
    (tmp_path / "a_file").write_text("keep me")
    with pytest.raises(VlpromptError):
        save_pretrained(learner, tmp_path / "a_file")
    assert (tmp_path / "a_file").read_text() == "keep me"
    saved = save_pretrained(learner, tmp_path / "again")
    assert save_pretrained(CoOp(tiny_backbone, classnames[:2], n_ctx=2), saved) == saved
    assert "yellow star" not in (saved / "config.json").read_text()


def test_a_failed_replacement_keeps_the_earlier_output(tiny_backbone, classnames, tmp_path):
    from vlprompt.io import atomic_dir

    out = tmp_path / "out"
    with atomic_dir(out, lambda d: True) as tmp:
        (tmp / "one").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, lambda d: True) as tmp:
            (tmp / "one").write_text("second, half written")
            raise RuntimeError("died midway")
    assert snapshot(out) == {"one": b"first"}
    assert sorted(os.listdir(tmp_path)) == ["out"]
