"""Artifacts that cannot lie: every tampering is refused by eval and predict with one message, exit status 2.

Each case writes a real artifact, changes it on disk as an attacker or a failing disk would, and runs
the command line on it. Nothing named in the file is imported, checked in a fresh process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlprompt.cli.main import main
from vlprompt.learners.artifact import (
    CONFIG_DIGEST,
    CONFIG_FILE,
    TENSORS_FILE,
    config_digest,
    from_pretrained,
    save_pretrained,
)
from vlprompt.learners.coop import CoOp
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.qprompt import QPrompt

NOT_IMPORTED = "vlprompt.world.gallery"  # a real vlprompt module that neither eval nor predict needs


def _edit_config(prompt: Path, change) -> None:
    """Change config.json and record its new SHA-256, as a tamperer who knows the format would (an edit
    without it is refused before anything else: tests/probes/test_probe_files_trusted.py)."""
    config = json.loads((prompt / CONFIG_FILE).read_text())
    change(config)
    config[CONFIG_DIGEST] = config_digest(config)
    (prompt / CONFIG_FILE).write_text(json.dumps(config))


def _rehash(prompt: Path, name: str) -> None:
    """Record the changed file's true SHA-256, as a tamperer who knows the format would."""
    _edit_config(prompt, lambda c: c["sha256"].__setitem__(name, hashlib.sha256((prompt / name).read_bytes()).hexdigest()))


def flipped_byte(prompt, outside):
    data = bytearray((prompt / TENSORS_FILE).read_bytes())
    data[-3] ^= 0x01  # a bit in the last float of ctx: still a valid file, silently other numbers
    (prompt / TENSORS_FILE).write_bytes(bytes(data))
    return "does not match the SHA-256"


def corrupt_header(prompt, outside):
    data = bytearray((prompt / TENSORS_FILE).read_bytes())
    data[8:20] = b"{not json!!!"
    (prompt / TENSORS_FILE).write_bytes(bytes(data))
    _rehash(prompt, TENSORS_FILE)
    return "is not a readable safetensors file"


def nan_tensor(prompt, outside):
    return "NaN or infinite"  # the artifact is saved from a learner with a NaN context (see make_artifact)


def symlink_out(prompt, outside):
    shutil.copy(prompt / TENSORS_FILE, outside / TENSORS_FILE)  # same bytes: the hash alone would pass
    (prompt / TENSORS_FILE).unlink()
    (prompt / TENSORS_FILE).symlink_to(outside / TENSORS_FILE)
    return "points outside the artifact"


def encoded_file_outside(prompt, outside):
    (outside / "ctx.qprompt-packed").write_bytes((prompt / "ctx.qprompt-packed").read_bytes())
    _edit_config(prompt, lambda c: c["encoded"]["ctx"].__setitem__("file", str(outside / "ctx.qprompt-packed")))
    return "not a file name inside"


def encoded_file_dotdot(prompt, outside):
    (outside / "ctx.qprompt-packed").write_bytes((prompt / "ctx.qprompt-packed").read_bytes())
    _edit_config(prompt, lambda c: c["encoded"]["ctx"].__setitem__("file", f"../{outside.name}/ctx.qprompt-packed"))
    return "not a file name inside"


def unknown_codec(prompt, outside):
    _edit_config(prompt, lambda c: c["encoded"]["ctx"].__setitem__("codec", "evil-codec"))
    return "codec 'evil-codec', which this vlprompt does not know"


def module_path(prompt, outside):
    """Format 1 named the codec's module and the loader imported it; now the name alone is looked up."""
    _edit_config(prompt, lambda c: c["encoded"]["ctx"].update(codec="gallery", module=NOT_IMPORTED))
    return "codec 'gallery', which this vlprompt does not know"


CASES = {f.__name__: f for f in (flipped_byte, corrupt_header, nan_tensor, symlink_out, encoded_file_outside,
                                 encoded_file_dotdot, unknown_codec, module_path)}
QUANTIZED = {"encoded_file_outside", "encoded_file_dotdot", "unknown_codec", "module_path"}


def make_artifact(root: Path, case: str, backbone, classnames) -> tuple[Path, str]:
    torch.manual_seed(0)
    learner = CoOp(backbone, classnames, n_ctx=2)
    if case == "nan_tensor":
        with torch.no_grad():
            learner.ctx[0, 0] = float("nan")
    if case in QUANTIZED:
        QPrompt(bits=2, kmeans_init="kmeans++", kmeans_iters=5, cac_interval=1,
                cac_kl_threshold=0.0).setup(TrainContext(learner=learner))
    prompt = save_pretrained(learner, root / case / "prompt")
    outside = root / case / "elsewhere"
    outside.mkdir()
    return prompt, CASES[case](prompt, outside)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, image_folder_factory, classnames):
    root = tmp_path_factory.mktemp("inputs")
    image_folder_factory(root / "images", classnames=classnames, per_class=1)
    Image.new("RGB", (24, 24), (200, 10, 10)).save(root / "photo.png")
    return root


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_artifact_is_refused_with_one_message(tmp_path, inputs, tiny_backbone, classnames, capsys, command,
                                                       case):
    prompt, expected = make_artifact(tmp_path, case, tiny_backbone, classnames)
    argv = (["eval", "--prompt", str(prompt), "--dataset", f"folder:{inputs / 'images'}"] if command == "eval"
            else ["predict", "--prompt", str(prompt), str(inputs / "photo.png")])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert "weights_only" not in err[0] and ("re-save" in err[0] or "retrain" in err[0])


def test_intact_artifacts_of_both_kinds_still_load(tmp_path, tiny_backbone, classnames):
    for case in ("nan_tensor", "unknown_codec"):  # built like the tampered ones, left untouched
        torch.manual_seed(0)
        learner = CoOp(tiny_backbone, classnames, n_ctx=2)
        if case == "unknown_codec":
            QPrompt(bits=2, kmeans_init="kmeans++", kmeans_iters=5, cac_interval=1,
                    cac_kl_threshold=0.0).setup(TrainContext(learner=learner))
        save_pretrained(learner, tmp_path / case)
        assert torch.equal(from_pretrained(tmp_path / case, backbone=tiny_backbone).ctx, learner.ctx)


def test_refusals_import_nothing_named_in_the_file_and_qprompt_codec_loads_by_name(tmp_path, tiny_backbone,
                                                                                   classnames, inputs):
    """A fresh process: the quantized artifact loads (the command line loads through vlprompt.from_pretrained,
    whose imports register the built-in codecs), and the tampered ones are refused without importing the
    module the file names."""
    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    QPrompt(bits=2, kmeans_init="kmeans++", kmeans_iters=5, cac_interval=1,
            cac_kl_threshold=0.0).setup(TrainContext(learner=learner))
    good = save_pretrained(learner, tmp_path / "good")
    bad = [str(make_artifact(tmp_path, case, tiny_backbone, classnames)[0]) for case in ("module_path", "unknown_codec")]
    script = f"""
import sys
from vlprompt.cli.main import main
assert main(["predict", "--prompt", {str(good)!r}, {str(inputs / 'photo.png')!r}]) == 0
for prompt in {bad!r}:
    assert main(["predict", "--prompt", prompt, {str(inputs / 'photo.png')!r}]) == 2
assert {NOT_IMPORTED!r} not in sys.modules, "a module named in the artifact was imported"
print("ok")
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    assert done.stderr.count("error: ") == 2


def test_the_codec_qprompt_writes_is_registered_by_the_regularizers():
    from vlprompt.learners.artifact import ARTIFACT_CODECS
    from vlprompt.regularizers.qprompt import PromptQuantizer, decode_packed

    assert ARTIFACT_CODECS.get(PromptQuantizer.artifact_codec) is decode_packed


@pytest.mark.parametrize("change", [
    lambda c: c["encoded"]["ctx"].__setitem__("codec", ["a", "list"]),
    lambda c: c["encoded"]["ctx"].__setitem__("file", 5),
    lambda c: c.__setitem__("tensors", {"ctx": 7}),
    lambda c: c.pop("sha256"),
    lambda c: c.__setitem__("format", "vlprompt-prompt/1"),
])
def test_malformed_config_entries_are_refused(tmp_path, tiny_backbone, classnames, change):
    from vlprompt.errors import ArtifactError

    torch.manual_seed(0)
    learner = CoOp(tiny_backbone, classnames, n_ctx=2)
    QPrompt(bits=2, kmeans_init="kmeans++", kmeans_iters=5, cac_interval=1,
            cac_kl_threshold=0.0).setup(TrainContext(learner=learner))
    prompt = save_pretrained(learner, tmp_path / "prompt")
    _edit_config(prompt, change)
    with pytest.raises(ArtifactError, match="re-save the prompt"):
        from_pretrained(prompt, backbone=tiny_backbone)
