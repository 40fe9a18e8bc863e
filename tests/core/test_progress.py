"""Progress in logs: without a terminal a stage logs a line per tenth (or given share) with rate and ETA."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

from vlprompt.progress import Progress, format_duration

LINE = re.compile(r"(\w+): (\d+)/(\d+) img \((\d+)%\), [\d.]+ img/s, ETA [\d.]+ s")


def test_a_line_per_quarter_with_position_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, "vlprompt.progress")
    assert list(Progress(range(20), "encode", unit="img", log_every=0.25)) == list(range(20))
    lines = [LINE.fullmatch(r.getMessage()) for r in caplog.records]
    assert all(lines) and [(m[2], m[4]) for m in lines] == [("5", "25"), ("10", "50"), ("15", "75"), ("20", "100")]


def test_resumed_stage_counts_from_its_start_and_ends_with_a_line(caplog):
    caplog.set_level(logging.INFO, "vlprompt.progress")
    bar = Progress(iter(range(7)), "pretrain", total=10, unit="step", initial=3, log_every=0.5)
    for _ in bar:
        bar.set_postfix(loss="0.5")
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(" (")[0] for m in messages] == ["pretrain: 5/10 step", "pretrain: 10/10 step"]
    assert all(m.endswith("(loss 0.5)") for m in messages)


def test_no_lines_when_the_caller_logs_its_own_summary(caplog):
    caplog.set_level(logging.INFO, "vlprompt.progress")
    assert sum(Progress(range(5), "epoch 1/2", log_every=None)) == 10
    assert not caplog.records


def test_durations_read_like_a_person_would_write_them():
    assert [format_duration(s) for s in (0.44, 42.4, 185, 7620, float("inf"))] == [
        "0.4 s", "42 s", "3 min 05 s", "2 h 07 min", "?"]


def test_train_log_redirected_to_a_file_shows_progress(tmp_path, image_folder_factory):
    image_folder_factory(tmp_path / "images", per_class=4)
    log_file = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "vlprompt", "train", f"data.dataset=folder:{tmp_path / 'images'}",
           "backbone.pretrained=null", "learner.options.n_ctx=2", "train.epochs=3", "train.batch_size=4",
           f"output_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]
    with log_file.open("w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))
    text = log_file.read_text()
    assert done.returncode == 0, text[-3000:]
    epochs = re.findall(r"epoch (\d)/3: loss ce [\d.e+-]+, train accuracy [\d.]+%, [\d.]+ s "
                        r"\([\d.]+ batch/s\), ETA [\d.]+ s", text)
    assert epochs == ["1", "2", "3"]
    # 5 classes x 4 training images: a line per 10% of the 20 images, the last at 100%
    features = re.findall(r"train features: (\d+)/20 img \((\d+)%\), [\d.]+ img/s, ETA [\d.]+ s", text)
    assert [int(n) for n, _ in features] == list(range(2, 21, 2)) and features[-1][1] == "100"
    assert "test features (" in text
    assert "torch threads: 1" in text  # the run says how many threads it computes with (OMP_NUM_THREADS=1 here)
