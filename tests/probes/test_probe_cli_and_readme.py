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


# 19. Offline, `backbone.name=ViT-B-16 backbone.pretrained=openai` retried for 50 s with 44 warning lines, and a
# paper preset with no data on disk tried the download before it noticed that the data was missing.

def offline_env(tmp_path: Path, endpoint: str) -> dict:
    """Empty caches, and the hub at ``endpoint`` on this machine, without proxies: nothing reaches the network."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return dict(env, HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "xdg"), HF_ENDPOINT=endpoint,
                HF_HUB_OFFLINE="0", OMP_NUM_THREADS="1")


@pytest.fixture
def local_port():
    """A listening socket on this machine: its port takes connections, and counts them."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0)
        yield server


def connections(server) -> int:
    count = 0
    while True:
        try:
            server.accept()[0].close()
            count += 1
        except BlockingIOError:
            return count


def test_an_offline_machine_is_told_at_once_how_to_use_a_local_checkpoint(tmp_path):
    import socket

    with socket.socket() as unused:  # bound, never listening: a connection to it is refused, as offline
        unused.bind(("127.0.0.1", 0))
        env = offline_env(tmp_path, f"http://127.0.0.1:{unused.getsockname()[1]}")
        done = vlprompt_cli("train", "backbone.name=ViT-B-16", "backbone.pretrained=openai",
                            f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path,
                            env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "this machine looks offline" in error[0]
    assert "pretrained=/path/to/weights.pt" in error[0] and "backbone.pretrained=" in error[0]
    assert "Retrying" not in done.stderr and "WARNING" not in done.stderr
    assert not (tmp_path / "runs").exists()


def test_a_missing_dataset_is_reported_before_any_download(tmp_path, local_port):
    empty = tmp_path / "data"
    empty.mkdir()
    env = offline_env(tmp_path, f"http://127.0.0.1:{local_port.getsockname()[1]}")
    done = vlprompt_cli("train", "--preset", "coop-b2n-vitb16", "data.dataset=oxford_pets", f"data.root={empty}",
                        f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path, env=env,
                        timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "oxford_pets" in done.stderr and str(empty) in done.stderr
    assert connections(local_port) == 0  # the weights' host was never asked


CACHED_TAG = r"""
import json, sys
from pathlib import Path
import open_clip, torch
from open_clip.pretrained import _PRETRAINED, _pcfg
from safetensors.torch import save_file

# a small architecture with a hub tag, as open_clip lists its own models
work = Path(sys.argv[1])
config = json.loads(Path(sys.argv[2]).read_text())
(work / "probe-tiny.json").write_text(json.dumps(config))
open_clip.add_model_config(work / "probe-tiny.json")
_PRETRAINED["probe-tiny"] = {"hubtest": _pcfg(hf_hub="probe/tiny/", mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))}
# the file the hub would have given, in the Hugging Face cache's layout
snapshot = work / "hf" / "hub" / "models--probe--tiny" / "snapshots" / "0123abcd"
snapshot.mkdir(parents=True)
(snapshot.parents[1] / "refs").mkdir()
(snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
torch.manual_seed(7)
weights = open_clip.create_model("probe-tiny").state_dict()
save_file({k: v.contiguous() for k, v in weights.items()}, str(snapshot / "open_clip_model.safetensors"))

from vlprompt.backbones import load_backbone
backbone = load_backbone("probe-tiny", "hubtest")
same = all(torch.equal(v, weights[k]) for k, v in backbone.model.state_dict().items())
print(json.dumps({"same": same, "mean": list(backbone.mean), "pretrained": backbone.identity.pretrained}))
"""


def test_weights_in_the_local_cache_load_offline_without_asking_the_hub(tmp_path, local_port):
    import json

    from vlprompt.backbones.embedded import CONFIG_DIR

    env = offline_env(tmp_path, f"http://127.0.0.1:{local_port.getsockname()[1]}")
    done = subprocess.run([sys.executable, "-c", CACHED_TAG, str(tmp_path), str(CONFIG_DIR / "vlprompt-tiny.json")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded["same"] and loaded["pretrained"] == "hubtest"
    assert loaded["mean"] == pytest.approx([0.1, 0.2, 0.3])  # the tag's preprocessing, as open_clip gives it
    assert connections(local_port) == 0


# 24. `vlprompt list methods` took 4.1 s: it imported torch to read the capabilities.

LIST_WITHOUT_TORCH = r"""
import contextlib, io, json, sys
from vlprompt.cli.main import main

outputs = {}
for what in ("methods", "learners", "regularizers", "datasets"):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", what]) == 0
    outputs[what] = out.getvalue()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "torchvision"))
print(json.dumps({"heavy": heavy, "outputs": outputs}))
"""


def test_list_methods_answers_without_importing_torch():
    import json

    from vlprompt.api import list_methods

    done = subprocess.run([sys.executable, "-c", LIST_WITHOUT_TORCH], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    listed = json.loads(done.stdout)
    assert listed["heavy"] == []
    # the same answers as the classes give when they are imported
    cells, section = {}, None
    for line in listed["outputs"]["methods"].splitlines():
        if line.endswith(":") and not line.startswith(" "):
            section = line[:-1]
        elif line.startswith("  "):
            learner, cell = line.split(None, 1)
            cells[learner, section] = cell
    expected = {key: "yes" if not missing else "no: needs " + ", ".join(c.value for c in missing)
                for key, missing in list_methods().items()}
    assert cells == expected
    assert "coop  M learnable context vectors" in listed["outputs"]["learners"]
    assert "kgcoop  Pull the learned class text features" in listed["outputs"]["regularizers"]


# 21. The README's plain-open_clip snippet failed for the tiny model and never defined `image`.

def readme_block_after(marker: str) -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme[readme.index(marker):]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


RUN_WITHOUT_VLPROMPT = r"""
import json, sys
sys.modules["vlprompt"] = None  # any import of vlprompt fails: the snippet is plain open_clip
exec(open("snippet.py").read())
print(json.dumps(logits.tolist()))
"""


def test_the_readme_open_clip_snippet_runs_as_written(classnames, tmp_path):
    import json

    from PIL import Image

    from vlprompt import export_classifier, load_backbone
    from vlprompt.data.transforms import eval_transform

    snippet = readme_block_after("With plain open_clip")
    backbone = load_backbone("vlprompt-tiny")  # what a README user trains on: the shipped weights
    torch.manual_seed(1)
    learner = CoOp(backbone, classnames, n_ctx=2)
    with torch.no_grad():
        learner.ctx.normal_(0, 0.5)
    export_classifier(learner, tmp_path / "clf")
    Image.fromarray(torch.randint(0, 256, (60, 80, 3), dtype=torch.uint8).numpy()).save(tmp_path / "photo.jpg")
    (tmp_path / "snippet.py").write_text(snippet)
    done = subprocess.run([sys.executable, "-c", RUN_WITHOUT_VLPROMPT], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    printed, plain = done.stdout.splitlines()[-2], torch.tensor(json.loads(done.stdout.splitlines()[-1]))
    with torch.no_grad():  # what vlprompt computes for the same image
        ours = learner(images=eval_transform(backbone)(Image.open(tmp_path / "photo.jpg").convert("RGB"))[None]).logits
    assert torch.allclose(plain, ours, atol=1e-3), (plain, ours)
    assert printed == classnames[int(ours.argmax())]
