"""Settings that cannot work are refused when the config is parsed: one message naming the key and the
valid values, exit status 2, no traceback, and nothing written (no run folder, no backbone loaded)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vlprompt.cli.main import main

CLI = [sys.executable, "-m", "vlprompt.cli.main"]

BAD = {
    "unknown learner option": (["learner.options.n_ctxx=4"], ["n_ctxx", "n_ctx", "ctx_init"]),
    "wrong option type": (["learner.options.n_ctx=abc"], ["coop.n_ctx='abc'", "must be a whole number"]),
    "choice outside the valid values": (["learner.options.class_token_position=back"],
                                        ["class_token_position='back'", "'end'", "'middle'", "'front'"]),
    "unknown learner": (["learner.name=cooop"], ["unknown learner 'cooop'", "'coop'", "'maple'"]),
    "a regularizer named as the learner": (["learner.name=clap"], ["'clap' is a regularizer, not a learner",
                                                                    "zslp+clap"]),
    "unknown regularizer": (["regularizers=[{name: kgcop}]"], ["unknown regularizer 'kgcop'", "'kgcoop'"]),
    "required option missing": (["regularizers=[{name: nemesis, beta: 0}]"], ["nemesis.omega", "required"]),
    "unknown regularizer option": (["regularizers=[{name: kgcoop, wieght: 2}]"], ["wieght", "weight"]),
    "zero-shot with a regularizer": (["learner.name=zeroshot", "regularizers=[{name: kgcoop}]"],
                                     ["'zeroshot'", "learned_text_prompts"]),
    "regularizer needs a frozen image tower": (["learner.name=maple", "regularizers=[{name: nemesis, beta: 0, omega: 1}]"],
                                               ["'maple'", "fixed_image_features"]),
    "class-specific context with base-to-new": (["learner.options.csc=true", "data.subsample=base",
                                                 "data.eval_subsets=[base,new]"],
                                                ["transfers_to_new_classes", "new classes"]),
    "two gradient transforms": (["regularizers=[{name: prograd}, {name: prograd}]"], ["'prograd'", "twice"]),
    "learner options not a mapping": (["learner.options=5"], ["learner.options", "mapping"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_refused_at_parse_time(case, tmp_path, capsys):
    overrides, expected = BAD[case]
    out = tmp_path / "runs"
    status = main(["train", "data.dataset=world:objects", *overrides, f"output_dir={out}",
                   f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_the_cli_process_prints_no_traceback(tmp_path):
    done = subprocess.run(CLI + ["train", "learner.options.n_ctx=abc", f"output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.startswith("error: ")
