"""Command-line arguments are validated: one message naming the argument, exit status 2, no traceback."""

from __future__ import annotations

import pytest
from PIL import Image

from vlprompt.cli.main import main
from vlprompt.learners.artifact import save_pretrained
from vlprompt.learners.coop import CoOp


@pytest.fixture(scope="module")
def prompt_and_image(tmp_path_factory, tiny_backbone, classnames):
    root = tmp_path_factory.mktemp("predict")
    Image.new("RGB", (24, 24), (10, 200, 10)).save(root / "photo.png")
    return save_pretrained(CoOp(tiny_backbone, classnames, n_ctx=2), root / "prompt"), root / "photo.png"


def run(argv, capsys) -> tuple[int, list[str]]:
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's own refusals
        status = exit.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, [line for line in captured.err.splitlines() if "error:" in line]


@pytest.mark.parametrize("extra, expected", [
    (["--classes", ""], "names no class"),
    (["--classes", " , "], "names no class"),
    (["--classes", "cat,,dog"], "has an empty name"),
    (["--classes", "cat,dog, cat"], "names 'cat' more than once"),
    (["--top-k", "0"], "argument --top-k: '0' is not a whole number of at least 1"),
    (["--top-k", "-2"], "argument --top-k: '-2' is not a whole number of at least 1"),
    (["--top-k", "two"], "argument --top-k: 'two' is not a whole number of at least 1"),
])
def test_predict_refuses_bad_arguments(prompt_and_image, capsys, extra, expected):
    prompt, image = prompt_and_image
    status, errors = run(["predict", "--prompt", str(prompt), str(image), *extra], capsys)
    assert status == 2 and len(errors) == 1 and expected in errors[0], errors


def test_predict_names_a_missing_image_without_talk_of_splits(prompt_and_image, capsys, tmp_path):
    prompt, image = prompt_and_image
    status, errors = run(["predict", "--prompt", str(prompt), str(image), str(tmp_path / "nope.jpg")], capsys)
    assert status == 2 and errors == [f"error: image file {tmp_path / 'nope.jpg'} not found; check the path"]


def test_predict_with_valid_arguments_ranks_the_given_classes(prompt_and_image, capsys):
    prompt, image = prompt_and_image
    assert main(["predict", "--prompt", str(prompt), str(image), "--classes", "cat, dog", "--top-k", "5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    ranked = line.split(": ", 1)[1].split(", ")
    assert sorted(r.rsplit(" ", 1)[0] for r in ranked) == ["cat", "dog"]  # top-k capped at the 2 classes


@pytest.mark.parametrize("option, value", [("--seeds", "1,x"), ("--seeds", ","), ("--shots", "a"),
                                           ("--ratios", "1,half"), ("--workers", "0")])
def test_run_refuses_bad_number_lists(capsys, tmp_path, option, value):
    status, errors = run(["run", "few_shot", option, value, "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and len(errors) == 1 and f"argument {option}: {value!r}" in errors[0], errors
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [[], ["-v"], ["analyze"], ["world"], ["data"]])
def test_a_missing_command_is_one_error(capsys, argv):
    status, errors = run(argv, capsys)
    assert status == 2 and len(errors) == 1, errors


def test_a_diverging_run_ends_with_one_message(tmp_path, image_folder_factory, capsys):
    image_folder_factory(tmp_path / "images", per_class=2)
    status, errors = run(["train", f"data.dataset=folder:{tmp_path / 'images'}", "backbone.pretrained=null",
                          "learner.options.n_ctx=2", "train.epochs=2", "train.warmup_epochs=0", "train.lr=1e30",
                          "train.batch_size=2", f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"],
                         capsys)
    assert status == 2 and len(errors) == 1 and "non-finite loss in epoch" in errors[0], errors
    assert "lower train.lr" in errors[0]
