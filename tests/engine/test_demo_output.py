"""`vlprompt demo` speaks only for itself: no open_clip INFO lines, no false warnings."""

from __future__ import annotations

import subprocess
import sys


def test_demo_prints_no_open_clip_chatter_and_no_warning(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vlprompt.cli.main", "demo", "--methods", "zeroshot,coop",
                           "--datasets", "world:shapes", "--out", str(tmp_path / "demo"), "train.epochs=1",
                           f"cache_dir={tmp_path / 'cache'}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "| world:shapes | coop |" in done.stdout
    for chatter in (" root: ", "Loaded built-in", "Instantiating model", "No pretrained weights", "initialized randomly",
                    "WARNING"):
        assert chatter not in log, chatter
