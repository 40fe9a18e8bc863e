"""Atomic writes: interrupted writes leave nothing behind after the next write; files get the user's umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlprompt.io import atomic_dir, atomic_path, write_text


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def die_while_writing(target: Path, kind: str) -> None:
    """A real process that starts an atomic write of ``target`` and dies inside it (no cleanup runs)."""
    body = ("with atomic_path(target) as tmp:\n    tmp.write_text('half')\n    os._exit(1)\n" if kind == "file" else
            "with atomic_dir(target, lambda d: False) as tmp:\n    (tmp / 'part').write_text('half')\n    os._exit(1)\n")
    script = f"import os\nfrom pathlib import Path\nfrom vlprompt.io import atomic_dir, atomic_path\ntarget = Path({str(target)!r})\n{body}"
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 1


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_next_write_removes_what_an_interrupted_write_left(tmp_path, kind):
    target = tmp_path / "out" / ("results.json" if kind == "file" else "prompt")
    die_while_writing(target, kind)
    first = temporaries(target.parent)
    die_while_writing(target, kind)  # the second attempt already clears the first one's leftover
    assert len(first) == 1 and len(temporaries(target.parent)) == 1 and temporaries(target.parent) != first
    assert not target.exists()
    if kind == "file":
        write_text(target, "whole")
        assert target.read_text() == "whole"
    else:
        with atomic_dir(target, lambda d: False) as tmp:
            (tmp / "part").write_text("whole")
        assert (target / "part").read_text() == "whole"
    assert temporaries(target.parent) == []


def test_a_live_writers_temporary_and_other_targets_are_left_alone(tmp_path):
    target = tmp_path / "a"
    die_while_writing(tmp_path / "a.b", "file")  # a dead writer of another target whose name extends this one
    with atomic_path(target) as outer:
        outer.write_text("outer")
        write_text(target, "inner")  # a second writer of the same target while the first is still writing
        assert outer.exists()
    assert target.read_text() == "outer"
    assert len(temporaries(tmp_path)) == 1 and temporaries(tmp_path)[0].startswith(".a.b.")


def test_unowned_temporaries_of_older_versions_go_once_an_hour_old(tmp_path):
    old, fresh = tmp_path / ".x.ab12CD34.tmp", tmp_path / ".x.zz99yy88.tmp"
    old.write_text("?")
    fresh.write_text("?")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    write_text(tmp_path / "x", "new")
    assert temporaries(tmp_path) == [fresh.name]


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_saved_prompt_gets_the_users_umask(tmp_path, tiny_backbone, classnames, umask, file_mode, dir_mode):
    from vlprompt.learners.artifact import save_pretrained
    from vlprompt.learners.coop import CoOp

    previous = os.umask(umask)
    try:
        prompt = save_pretrained(CoOp(tiny_backbone, classnames, n_ctx=2), tmp_path / "runs" / "prompt")
        write_text(tmp_path / "runs" / "results.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(prompt.stat().st_mode) == dir_mode
    files = [*prompt.iterdir(), tmp_path / "runs" / "results.json"]
    assert len(files) == 3 and all(stat.S_IMODE(p.stat().st_mode) == file_mode for p in files)
