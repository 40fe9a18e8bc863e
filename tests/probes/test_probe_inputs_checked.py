"""New-user probes 4-10 and 13 of issue 26: bad input is refused before anything is written.

Each case runs the real command line in its own process and checks exit status 2, a one-message
refusal that names what is wrong, no traceback, and that the folders involved are byte-for-byte as
they were: no run folder, lock, config.yaml, split cache or feature cache.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vlprompt.engine.config import resolve_config
from vlprompt.learners.registry import build_learner

README = Path(__file__).resolve().parents[2] / "README.md"


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with the bytes of its files (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def vlprompt(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlprompt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def train(tmp_path: Path, dataset: str, *overrides: str) -> subprocess.CompletedProcess:
    return vlprompt("train", "--preset", "world-demo", "train.epochs=1", f"data.dataset={dataset}",
                    f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", *overrides, cwd=tmp_path)


def refused(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """The error message of a clean refusal (exit 2, no traceback), checked to contain ``fragments``."""
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stderr[done.stderr.index("error: "):]
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.fixture
def folder(tmp_path, image_folder_factory):
    """A function making ``tmp_path/NAME`` with one sub-folder of images per class (split per class by vlprompt)."""
    def make(name: str, classnames: list[str], per_class: int = 3) -> Path:
        root = image_folder_factory(tmp_path / "made", classnames, per_class=per_class, splits=("all",))
        return (root / "all").rename(tmp_path / name)
    return make


def test_probe_4_a_one_class_folder_is_refused(tmp_path, folder):
    data = folder("one", ["cat"])
    before = snapshot(tmp_path)
    message = refused(train(tmp_path, f"folder:{data}"), f"folder:{data}", "1 class ('cat')", "at least 2 classes")
    assert message.count("\n") == 1  # one message, on one line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("classes, empty_half", [(["cat"], None), (["cat", "dog", "eel"], "new")])
def test_probe_5_a_base_new_split_needs_two_classes_per_half(tmp_path, folder, classes, empty_half):
    data = folder("few", classes)
    before = snapshot(tmp_path)
    done = train(tmp_path, f"folder:{data}", "data.subsample=base", "data.eval_subsets=[base,new]")
    if empty_half:  # 3 classes: base 2, new 1
        refused(done, "data.eval_subsets=new", "base 2, new 1", "at least 4 classes", "data.subsample=all")
    else:
        refused(done, "1 class ('cat')", "at least 2 classes")
    assert snapshot(tmp_path) == before


def test_probe_5_four_classes_are_enough_for_a_base_new_split(tmp_path, folder):
    data = folder("four", ["ant", "bee", "cat", "dog"])
    done = train(tmp_path, f"folder:{data}", "data.subsample=base", "data.eval_subsets=[base,new]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"harmonic mean: \d", done.stdout), done.stdout


def test_probe_6_n_ctx_against_the_presets_ctx_init_is_refused_at_parse_time(tmp_path):
    for overrides, fragments in (
            (["learner.options.n_ctx=100000"], ["coop.n_ctx=100000", "ctx_init='a photo of a'", "4 words",
                                                "learner.options.n_ctx"]),
            (["learner.options.n_ctx=100000", "learner.options.ctx_init=null"],
             ["learner.options.n_ctx=100000", "77-token text context", "<= 73"])):
        done = train(tmp_path, "world:objects", *overrides)
        refused(done, *fragments)
        assert "load took" not in done.stderr  # refused before the backbone loads
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_probe_6_the_readme_n_ctx_example_gives_that_many_context_vectors(tiny_backbone):
    """The README's override example is true under the world-demo preset it sits beside."""
    example = "learner.options.ctx_init=null learner.options.n_ctx=8"
    assert f"`{example}`" in README.read_text()
    config = resolve_config("world-demo", example.split())
    learner = build_learner("coop", tiny_backbone, ["cat", "dog"], **config.learner.options.to_dict())
    assert learner.ctx.shape[0] == 8
    assert resolve_config("world-demo", []).learner.options.n_ctx == 4  # the preset's phrase has four words


def test_probe_7_every_unreadable_image_is_listed_in_one_message(tmp_path, folder):
    data = folder("corrupt", ["ant", "bee", "cat"], per_class=4)
    (data / "ant" / "0.png").write_text("not an image")
    truncated = data / "bee" / "1.png"
    truncated.write_bytes(truncated.read_bytes()[:80])
    Image.new("RGB", (64, 64), (90, 20, 20)).save(data / "cat" / "big.jpg")
    jpeg = data / "cat" / "big.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    before = snapshot(tmp_path)
    message = refused(train(tmp_path, f"folder:{data}"), "3 of the 13 images", "replace or delete")
    for bad in ("ant/0.png", "bee/1.png", "cat/big.jpg"):
        assert f"{data / bad}: cannot be decoded" in message
    assert snapshot(tmp_path) == before


def test_probe_7_a_csv_listing_a_system_file_and_a_missing_one(tmp_path, folder):
    data = folder("good", ["ant", "bee"], per_class=3)
    rows = [f"{p},{p.parent.name}" for p in sorted(data.rglob("*.png"))] + ["/etc/passwd,ant", "gone.png,bee"]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    before = snapshot(tmp_path)
    message = refused(train(tmp_path, f"csv:{csv}"), "2 of the 8 images", "/etc/passwd: cannot be decoded",
                      f"{tmp_path / 'gone.png'}: missing", "rows in the CSV")
    assert snapshot(tmp_path) == before
    assert "Traceback" not in message


@pytest.mark.parametrize("learner", ["coop", "zeroshot"])
def test_probe_8_a_class_name_longer_than_the_text_context_is_refused(tmp_path, folder, learner):
    long_name = "_".join(["x"] * 110)  # 110 one-token words: more than the 77-token context
    data = folder("wordy", ["ant", "bee", long_name])
    before = snapshot(tmp_path)
    refused(train(tmp_path, f"folder:{data}", f"learner.name={learner}"),
            "class name 'x_x_x", "77-token text context of vlprompt-tiny", "at most 70 tokens", "rename")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("text, fragments", [
    ("backbone: {name: vlprompt-tiny\ntrain:\n  epochs: 1\n", ["line 2", "not valid YAML"]),
    ("train:\n  epochs: 1\n   lr: 2\n", ["line 3", "not valid YAML"]),
    ("- coop\n- kgcoop\n", ["holds a YAML list, not a mapping"]),
])
def test_probe_9_a_bad_preset_file_is_refused_naming_it_and_the_line(tmp_path, text, fragments):
    preset = tmp_path / "mine.yaml"
    preset.write_text(text)
    before = snapshot(tmp_path)
    refused(vlprompt("train", "--preset", str(preset), f"output_dir={tmp_path / 'runs'}", cwd=tmp_path),
            f"preset {preset}", *fragments)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("option", ["output_dir", "cache_dir"])
def test_probe_10_an_output_folder_that_is_a_file(tmp_path, folder, option):
    data = folder("six", ["ant", "bee", "cat"])
    (tmp_path / "afile").write_text("mine")
    before = snapshot(tmp_path)
    done = vlprompt("train", "--preset", "world-demo", "train.epochs=1", f"data.dataset=folder:{data}",
                    f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}",
                    f"{option}={tmp_path / 'afile'}", cwd=tmp_path)
    refused(done, f"{option}={tmp_path / 'afile'} is a file, not a folder")
    done = vlprompt("run", "few_shot", "--methods", "coop", "--seeds", "1", "--shots", "1",
                    "--out", str(tmp_path / "afile" / "sub"), cwd=tmp_path)
    refused(done, f"--out={tmp_path / 'afile' / 'sub'} lies under {tmp_path / 'afile'}, which is a file")
    assert snapshot(tmp_path) == before


def test_probe_13_data_verify_says_the_root_does_not_exist(tmp_path):
    done = vlprompt("data", "verify", "--root", str(tmp_path / "nonexistent"), cwd=tmp_path)
    message = refused(done, f"data root {tmp_path / 'nonexistent'} does not exist")
    assert message.count("\n") == 1 and done.stdout == ""
    refused(vlprompt("data", "verify", "--root", str(tmp_path), "--dataset", "oxford_petz", cwd=tmp_path),
            "unknown dataset 'oxford_petz'", "'oxford_pets'")
