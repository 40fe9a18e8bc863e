"""New-user probes 11, 12, 19, 20, 21 and 24: the command line, an offline first hour, and the README.

Each case runs through the real command (``python -m vlprompt`` in a subprocess) or the public API, the
way the probe that found it did.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlprompt.learners.artifact import save_pretrained
from vlprompt.learners.coop import CoOp


def vlprompt_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlprompt", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def prompt(tiny_backbone, classnames, tmp_path):
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    with torch.no_grad():
        learner.ctx.normal_(0, 0.5)
    return save_pretrained(learner, tmp_path / "prompt")


# 11. `vlprompt predict ... some_dir/` said "image file some_dir not found".

def test_predict_takes_a_folder_of_images_recursively(prompt, classnames, image_folder_factory, tmp_path):
    photos = image_folder_factory(tmp_path / "photos", classnames[:2], per_class=2, splits=("test",)) / "test"
    (photos / "notes.txt").write_text("not an image")
    files = sorted(photos.rglob("*.png"))  # photos/<class>/<i>.png: one level below the folder given
    by_folder = vlprompt_cli("predict", "--prompt", str(prompt), "--top-k", "2", str(photos), cwd=tmp_path)
    by_file = vlprompt_cli("predict", "--prompt", str(prompt), "--top-k", "2", *map(str, files), cwd=tmp_path)
    assert by_folder.returncode == 0, by_folder.stderr[-2000:]
    lines = by_folder.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [str(f) for f in files]
    assert lines == by_file.stdout.splitlines()


def test_predict_names_a_folder_without_images_as_a_folder(prompt, tmp_path):
    empty = tmp_path / "some_dir"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no pictures here")
    done = vlprompt_cli("predict", "--prompt", str(prompt), str(empty), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{empty} is a folder that holds no image files" in done.stderr
    missing = vlprompt_cli("predict", "--prompt", str(prompt), str(tmp_path / "nope.png"), cwd=tmp_path)
    assert missing.returncode == 2 and "nope.png not found" in missing.stderr


# 12. `vlprompt list backbones | head -3` printed a BrokenPipeError traceback.

@pytest.mark.parametrize("what", ["datasets", "backbones", "methods"])
def test_list_into_a_closed_pipe_exits_quietly(what, tmp_path):
    """The reader's end of a real pipe is closed before anything is written, so every write fails."""
    process = subprocess.Popen([sys.executable, "-m", "vlprompt", "list", what], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    try:
        stderr = process.stderr.read().decode()
        status = process.wait(timeout=300)
    finally:
        process.kill()
    assert stderr == "" and status == 141  # 128 + SIGPIPE, as a shell reports `yes | head -1`


def test_head_reads_the_first_line_of_a_listing(tmp_path):
    done = subprocess.run(f"{sys.executable} -m vlprompt list backbones | head -1", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == "vlprompt-tiny  world\n" and done.stderr == ""


# 20. `load_backbone("vlprompt-tiny")` silently gave random weights.

def test_the_embedded_models_name_alone_loads_its_shipped_weights():
    from safetensors.torch import load_file

    from vlprompt import load_backbone
    from vlprompt.backbones.embedded import WEIGHTS_PATH
    from vlprompt.errors import BackboneError

    by_name = load_backbone("vlprompt-tiny")
    shipped = load_file(str(WEIGHTS_PATH))
    loaded = by_name.model.state_dict()
    assert by_name.identity.pretrained == "world"
    assert all(torch.equal(loaded[key], shipped[key].float()) for key in shipped if key in loaded)
    assert {"visual.conv1.weight", "text_projection"} <= shipped.keys() & loaded.keys()
    random = load_backbone("vlprompt-tiny", None, seed=0)  # random weights only when asked for
    assert random.identity.pretrained == "random" and random.identity.sha256 != by_name.identity.sha256
    with pytest.raises(BackboneError, match="ViT-B-32 has no default weights.*'openai'.*None for random weights"):
        load_backbone("ViT-B-32")
