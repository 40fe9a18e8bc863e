"""DESIGN.md's layering, checked with import-linter contracts (pyproject.toml [tool.importlinter])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_import_vlprompt_is_light_and_exposes_the_verbs():
    code = ("import sys, vlprompt; assert 'torch' not in sys.modules, 'import vlprompt imported torch'; "
            "print(sorted(n for n in vlprompt.__all__ if not n.startswith('_')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for verb in ("load_backbone", "create_method", "train", "evaluate", "from_pretrained", "list_methods",
                 "export_classifier", "describe"):
        assert verb in done.stdout
