"""``vlprompt --help`` and every subcommand's ``--help`` answer without importing torch (or open_clip)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import argparse, contextlib, io, json, sys
from vlprompt.cli.main import build_parser, main

def commands(parser, prefix=()):
    yield list(prefix)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, prefix + (name,))

heavy = ("torch", "open_clip", "torchvision", "numpy", "PIL", "safetensors")
done = []
for argv in commands(build_parser()):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv + ["--help"])
        except SystemExit as exit:
            assert exit.code == 0, (argv, exit.code)
    assert "usage: vlprompt" in out.getvalue(), argv
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    assert not loaded, (argv, loaded)
    done.append(argv)
print(json.dumps(done))
"""


def test_help_of_every_command_imports_no_heavy_library():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    commands = json.loads(done.stdout)
    for expected in ([], ["train"], ["eval"], ["predict"], ["run"], ["world", "pretrain"], ["analyze", "corruption"],
                     ["data", "verify"]):
        assert expected in commands
