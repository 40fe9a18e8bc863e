"""One run in two processes (torchrun, gloo on the CPU) trains the prompt the single-process run trains
with the same global batch, and only process 0 writes the run directory."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file


def test_two_processes_train_the_single_process_prompt(tmp_path, image_folder_factory):
    images = image_folder_factory(tmp_path / "images", per_class=4)
    common = ["train", f"data.dataset=folder:{images}", "data.shots=4", "backbone.pretrained=null", "train.epochs=3",
              "train.batch_size=5", "learner.options.n_ctx=4", "regularizers=[{name: prograd}]",
              f"cache_dir={tmp_path / 'cache'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    single = subprocess.run([sys.executable, "-m", "vlprompt", *common, f"output_dir={tmp_path / 'one'}"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run([sys.executable, "-m", "vlprompt", *common, "--nproc", "2", f"output_dir={tmp_path / 'two'}"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    (one,), (two,) = list((tmp_path / "one").iterdir()), list((tmp_path / "two").iterdir())
    a, b = load_file(str(one / "prompt" / "prompt.safetensors")), load_file(str(two / "prompt" / "prompt.safetensors"))
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    assert not torch.equal(a["ctx"], torch.zeros_like(a["ctx"]))
    # the batch of 5 splits 2 + 3, so the shares are weighted; the epoch records are the whole batches'
    assert (one / "metrics.jsonl").read_text().count("\n") == (two / "metrics.jsonl").read_text().count("\n") == 3
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert "process 1 of 2 trains its share of each batch; process 0 writes" in double.stderr
    assert double.stdout.count("run directory:") == 1  # process 0 alone reports
