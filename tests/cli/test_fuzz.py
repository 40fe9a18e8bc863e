"""Fuzzing the command line in process: random overrides, option values and argument lists.

Every input either runs or ends with exit status 2 and one ``error:`` message; never a traceback, and
a refused input leaves no file behind in the output folder (nor in the working directory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tempfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import vlprompt.regularizers  # noqa: E402,F401  (registration)
from vlprompt.cli.main import main  # noqa: E402
from vlprompt.learners.registry import LEARNERS  # noqa: E402
from vlprompt.regularizers.registry import REGULARIZERS  # noqa: E402

# The suite runs the same 30 examples each time; VLPROMPT_FUZZ_EXAMPLES=500 explores new ones (by hand).
DEEP = os.environ.get("VLPROMPT_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(DEEP or 30), deadline=None, derandomize=DEEP is None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# small values only: a big number of epochs, views or k-means iterations would be a long run, not a bug
values = st.one_of(st.integers(-2, 4), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                   st.text(max_size=6), st.lists(st.integers(-1, 3), max_size=2),
                   st.sampled_from(["base", "new", "all", "end", "middle", "L1", "a photo of a", "[base, new]",
                                    "{a: 1}", "1e-3", "fp16", "bf16", "dataset", "kmeans++"]))
TRAIN_KEYS = ["train.epochs", "train.lr", "train.batch_size", "train.momentum", "train.weight_decay",
              "train.warmup_epochs", "train.warmup_lr", "train.precision", "train.seed", "train.views",
              "train.eval_batch_size", "data.shots", "data.subsample", "data.eval_subsets", "data.imbalance_ratio",
              "backbone.name", "backbone.pretrained", "train.nonsense", "nonsense", "learner.options"]


def option_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls.Config)]


LEARNER_OPTIONS = sorted({f"learner.options.{o}" for n in LEARNERS for o in option_names(LEARNERS.get(n))}
                         | {"learner.options.zzz"})


def text_of(value) -> str:
    """The override's right-hand side as a user would type it (YAML flow style, strings as they are)."""
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


overrides = st.lists(st.tuples(st.sampled_from(TRAIN_KEYS + LEARNER_OPTIONS), values)
                     .map(lambda kv: f"{kv[0]}={text_of(kv[1])}"), max_size=3)
regularizer_specs = st.lists(
    st.sampled_from(sorted(REGULARIZERS) + ["bogus"]).flatmap(lambda name: st.dictionaries(
        st.sampled_from(sorted(option_names(REGULARIZERS.get(name))) + ["zzz"] if name in REGULARIZERS else ["zzz"]),
        values, max_size=3).map(lambda opts: {"name": name, **opts})), max_size=2)


def call(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit:  # argparse's refusals
            status = exit.code
    return status, err.getvalue()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def check_outcome(status: int, err: str, out: Path) -> None:
    hypothesis.event("ran" if status == 0 else "refused")
    assert "Traceback" not in err, err
    if status == 0:
        return
    assert status == 2, (status, err)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    if "non-finite loss" not in errors[0]:  # a run that started and diverged keeps its folder to be looked at
        assert files_under(out) == [], (errors[0], files_under(out))


@pytest.fixture(scope="module")
def images(tmp_path_factory, image_folder_factory):
    return image_folder_factory(tmp_path_factory.mktemp("fuzz") / "images", per_class=2)


@FUZZ
@given(learner=st.sampled_from(sorted(LEARNERS) + ["bogus"]), extra=overrides, regs=regularizer_specs)
def test_train_with_random_overrides_runs_or_refuses_cleanly(images, monkeypatch, learner, extra, regs):
    work = Path(tempfile.mkdtemp(prefix="vlprompt-fuzz-"))
    monkeypatch.chdir(work)
    out = work / "runs"
    argv = ["train", f"data.dataset=folder:{images}", "backbone.pretrained=null", "data.shots=1", "train.epochs=1",
            "train.batch_size=2", f"learner.name={learner}", f"output_dir={out}", f"cache_dir={work / 'cache'}",
            "learner.options.prompt_depth=2" if learner == "maple" else "learner.options={}",
            *(["regularizers=" + yaml.safe_dump(regs, default_flow_style=True).strip()] if regs else []), *extra]
    status, err = call(argv)
    check_outcome(status, err, out)
    if status == 2:
        assert [p for p in files_under(work) if "cache" not in p.parts] == files_under(out)


tokens = st.sampled_from(["eval", "predict", "list", "analyze", "corruption", "norms", "data", "verify", "learners",
                          "presets", "datasets", "--prompt", "--dataset", "--root", "--subset", "--classes", "--top-k",
                          "--metrics", "--out", "--replace", "--rescale", "--seed", "--decode", "-v", "x.png",
                          "folder:/nonexistent", "world:nope", "csv:missing.csv", "base", "0", "-1", "3", "a,b",
                          "", "=", "k=v", "nan"])


@FUZZ
@given(argv=st.lists(st.one_of(tokens, st.text(max_size=5)), min_size=1, max_size=6))
def test_random_argument_lists_run_or_refuse_cleanly(monkeypatch, argv):
    work = Path(tempfile.mkdtemp(prefix="vlprompt-fuzz-"))
    monkeypatch.chdir(work)
    status, err = call(argv)
    check_outcome(status, err, work)
