"""DESIGN.md's layering, checked with import-linter contracts (pyproject.toml [tool.importlinter])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_import_vlprompt_is_light_and_exposes_the_verbs():
    code = ("import sys, vlprompt; assert 'torch' not in sys.modules, 'import vlprompt imported torch'; "
            "print(sorted(n for n in vlprompt.__all__ if not n.startswith('_')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for verb in ("load_backbone", "create_method", "train", "evaluate", "from_pretrained", "list_methods",
                 "export_classifier", "describe"):
        assert verb in done.stdout


def test_every_module_is_inside_a_contract():
    """A module that is neither a layer nor a shared utility would escape the import checks."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    covered = {name for c in contracts for name in c.get("layers", []) + c.get("source_modules", [])}
    package = ROOT / "src" / "vlprompt"
    top_level = {f"vlprompt.{p.stem}" for p in package.iterdir()
                 if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem not in ("__init__", "__main__")}
    assert top_level - covered == set()
