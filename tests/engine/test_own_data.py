"""Own data by default: a user's folder or CSV trains on all its classes unless a base/new split is asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vlprompt.engine.config import resolve_config

SIX = ["ant", "bee", "cat", "dog", "eel", "fox"]


@pytest.mark.parametrize("dataset", ["folder:/data/my_images", "csv:/data/labels.csv"])
def test_own_data_with_the_world_preset_keeps_all_classes(dataset):
    config = resolve_config("world-demo", [f"data.dataset={dataset}"])
    assert (config.data.subsample, config.data.eval_subsets) == ("all", ["all"])
    assert config.data.shots == 16  # the rest of the preset still applies


def test_a_base_new_split_on_own_data_is_given_when_asked():
    config = resolve_config("world-demo", ["data.dataset=folder:/x", "data.subsample=base"])
    assert (config.data.subsample, config.data.eval_subsets) == ("base", ["all"])
    config = resolve_config("world-demo", ["data.dataset=folder:/x", "data.subsample=base",
                                           "data.eval_subsets=[base,new]"])
    assert (config.data.subsample, config.data.eval_subsets) == ("base", ["base", "new"])


def test_world_tasks_and_protocol_presets_keep_their_split():
    assert resolve_config("world-demo", ["data.dataset=world:objects_noise"]).data.subsample == "base"
    # a paper base-to-new preset names no dataset: choosing it is asking for its protocol on any data
    assert resolve_config("coop-b2n-vitb16", ["data.dataset=folder:/x"]).data.subsample == "base"


def test_readme_own_data_command_on_a_six_class_folder_gives_a_six_class_prompt(tmp_path, image_folder_factory):
    image_folder_factory(tmp_path / "my_images", classnames=SIX)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "vlprompt.cli.main", "train", "--preset", "world-demo", "learner.name=coop",
           "train.epochs=1", f"data.dataset=folder:{tmp_path / 'my_images'}",
           f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "prompt" / "config.json").read_text())["classnames"] == SIX
    # said before training: 6 classes, 16 shots capped at the 6 images per class, min(16, 4) validation images
    assert "all classes: 6 classes; images: train 36, val 24, test 36" in done.stderr
    assert done.stderr.index("6 classes; images") < done.stderr.index("train features took")
    assert json.loads((run_dir / "results.json").read_text())["metrics"]["all"]["num_samples"] == 36
