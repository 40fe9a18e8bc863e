"""Split-aware inference as an evaluation mode: a learner told at test time whether an image is a base or a
new one is evaluated both ways, results.json keeps both numbers, and the tables and the HTML report mark its
rows. The learner is a toy defined here (registered without editing vlprompt) whose told paths are known."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from html_page import parse
from torch import nn

from vlprompt.engine.run import harmonic_mean
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import LEARNERS, register_learner
from vlprompt.learners.zeroshot import zero_shot_text_features
from vlprompt.protocols.common import ProtocolRequest
from vlprompt.protocols.protocol import run_protocol
from vlprompt.report.html import write_report
from vlprompt.sweep.registry import RunRegistry

MARK = "told base/new at test time"


class ToyTold(PromptLearner):
    """Zero-shot classes plus a learned shift; told "base", it scores every image as the first class, a path
    whose numbers are known in advance; the split it is told is kept on the object it was told."""

    name = "toy_told"
    capabilities = frozenset({Capability.LEARNED_PROMPTS, Capability.LEARNED_TEXT, Capability.FIXED_IMAGE_FEATURES,
                              Capability.NEW_CLASSES, Capability.SPLIT_AWARE})

    def __init__(self, backbone, classnames, config=None, **options):
        super().__init__(backbone, classnames, config, **options)
        self.shift = nn.Parameter(torch.zeros(backbone.embed_dim))
        self.split = None
        self.set_classnames(classnames)

    def set_classnames(self, classnames):
        self.classnames = list(classnames)
        self.register_buffer("zs", zero_shot_text_features(self.backbone, self.classnames, ["a photo of a {}."]),
                             persistent=False)

    def set_inference_split(self, split):
        super().set_inference_split(split)
        self.split = split

    def text_features(self, image_features=None):
        return F.normalize(self.zs + self.shift, dim=-1)

    def scores(self, image_features, text_features):
        logits = super().scores(image_features, text_features)
        if self.split == "base":
            return logits + 1e4 * F.one_hot(torch.zeros(len(logits), dtype=torch.long), logits.shape[-1])
        return logits


@pytest.fixture
def toy_told():
    register_learner(ToyTold)
    yield
    LEARNERS.unregister("toy_told")


def test_split_aware_learner_records_both_numbers_and_the_report_marks_its_rows(toy_told, tmp_path,
                                                                               image_folder_factory):
    images = image_folder_factory(tmp_path / "images", classnames=[f"thing {c}" for c in "abcdef"], per_class=4)
    out = tmp_path / "out"
    request = ProtocolRequest(methods=["zeroshot", "toy_told"], seeds=[1, 2], preset="world-methods",
                              datasets=[f"folder:{images}"], out_dir=out,
                              overrides=["backbone.pretrained=null", "train.epochs=1", "train.batch_size=4",
                                         "data.shots=2", f"cache_dir={tmp_path / 'cache'}"])
    result = run_protocol("base_to_new", request)
    by_method = {}
    for plan, r in zip(result.plans, result.results):  # as written on disk
        by_method.setdefault(plan.method, []).append(json.loads((Path(r["run_dir"]) / "results.json").read_text()))

    for r in by_method["toy_told"]:
        assert r["inference"] == "split_aware"
        m = r["metrics"]
        # told "new" takes the split-agnostic path; told "base" predicts the first class for every image
        assert m["new"]["split_aware"]["accuracy"] == m["new"]["accuracy"]
        assert m["base"]["split_aware"]["per_class_accuracy"] == {"0": 100.0, "1": 0.0, "2": 0.0}
        assert m["base"]["split_aware"]["accuracy"] == pytest.approx(100 / 3)
        assert m["base"]["split_aware"]["num_samples"] == m["base"]["num_samples"] == 3 * 4
        assert set(m["base"]["split_aware"]) == {"accuracy", "macro_f1", "per_class_accuracy", "num_samples"}
        assert m["split_aware_harmonic_mean"] == pytest.approx(
            harmonic_mean(m["base"]["split_aware"]["accuracy"], m["new"]["split_aware"]["accuracy"]))
        assert m["harmonic_mean"] == pytest.approx(harmonic_mean(m["base"]["accuracy"], m["new"]["accuracy"]))
    told_base = [r["metrics"]["base"]["split_aware"]["accuracy"] for r in by_method["toy_told"]]
    agnostic_base = [r["metrics"]["base"]["accuracy"] for r in by_method["toy_told"]]
    for r in by_method["zeroshot"]:
        assert r["inference"] == "split_agnostic" and "split_aware" not in r["metrics"]["base"]
        assert "split_aware_harmonic_mean" not in r["metrics"]

    header = ["Dataset", "Method", "Base", "New", "H", "Inference", "Base (told)", "New (told)", "H (told)", "Seeds"]
    assert result.table.header == header and not result.table.footer  # one dataset: no average rows
    rows = {row[1]: row for row in result.table.rows}
    assert rows["zeroshot"][5:9] == ["split-agnostic", "", "", ""]
    b, n = statistics.mean(told_base), statistics.mean(
        r["metrics"]["new"]["split_aware"]["accuracy"] for r in by_method["toy_told"])
    assert rows["toy_told"][5:9] == [MARK, f"{b:.2f} ± {statistics.stdev(told_base):.2f}",
                                     rows["toy_told"][3], f"{harmonic_mean(b, n):.2f}"]
    assert rows["toy_told"][2] == f"{statistics.mean(agnostic_base):.2f} ± {statistics.stdev(agnostic_base):.2f}"

    reg = RunRegistry(out / "registry.sqlite")  # what a sweep records, so the report groups the protocol's rows
    try:
        reg.add(result.plans)
        for plan, r in zip(result.plans, result.results):
            reg.finish(plan.spec_id, r)
    finally:
        reg.close()
    index = write_report(out, tmp_path / "report")
    page = parse(index)
    assert page.tables[0] == [header, *[[str(c) for c in row] for row in result.table.rows]]
    with open(index.parent / "csv" / "base_to_new.csv") as f:
        assert list(csv.reader(f))[0] == header
    (raw_file,) = (index.parent / "csv").glob("raw_*.csv")
    raw = list(csv.DictReader(raw_file.open()))
    told_lines = {(row["run"], row["evaluated_on"]): float(row["accuracy"]) for row in raw if "told" in row["evaluated_on"]}
    assert told_lines == {(p.spec_id, f"{s} (told {s})"): r["metrics"][s]["split_aware"]["accuracy"]
                          for p, r in zip(result.plans, result.results) if p.method == "toy_told" for s in ("base", "new")}
    told_plan = next(p for p in result.plans if p.method == "toy_told")
    run_page = (index.parent / "runs" / f"{told_plan.spec_id}.html").read_text()
    assert f"base ({MARK})" in run_page and f"harmonic mean {MARK}" in run_page


def test_evaluation_views_do_not_leak_the_split_into_the_trained_learner(toy_told, tiny_backbone):
    learner = ToyTold(tiny_backbone, ["cat", "dog", "bird"])
    view = learner.for_classes(["cat", "dog"])
    view.set_inference_split("base")
    assert view.split == "base" and learner.split is None
    with pytest.raises(ValueError, match="'base', 'new' or None"):
        view.set_inference_split("all")
