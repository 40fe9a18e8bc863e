"""Runs of one method that fill the same table cell with different settings: the report keeps them apart as
labelled variants instead of pooling them as more seeds (a registry written the way a sweep writes it)."""

from __future__ import annotations

import statistics
from dataclasses import replace

from html_page import parse
from test_paper_columns import finish

from vlprompt.engine.config import load_preset
from vlprompt.protocols.few_shot import plan_few_shot
from vlprompt.report.html import write_report
from vlprompt.report.variants import label_variants
from vlprompt.sweep.registry import RunRegistry

ACCURACY = {(30, 1): 50.0, (30, 2): 54.0, (7, 1): 40.0, (7, 2): 41.0}  # (epochs, seed) -> accuracy, 1 shot


def few_shot_registry(out, epochs: list[int]) -> None:
    """zeroshot and coop on the world at 1 shot, seeds 1 and 2, once per epochs setting; each run finished."""
    preset = load_preset("world-demo")
    reg = RunRegistry(out)
    try:
        for e in epochs:
            zeroshot = plan_few_shot(["zeroshot"], ["world:objects"], [1], [1, 2], preset, out_dir=out)
            coop = plan_few_shot(["coop"], ["world:objects"], [1], [1, 2], preset, [f"train.epochs={e}"], out_dir=out)
            new = [p for p in zeroshot + coop if p.spec_id not in {r.spec_id for r in reg.rows()}]
            reg.add(new)
            for p in new:
                accuracy = 33.0 if p.method == "zeroshot" else ACCURACY[e, p.seed]
                finish(reg, p, 0, 0, {"all": {"accuracy": accuracy, "macro_f1": 0.0, "num_samples": 10}})
    finally:
        reg.close()


def stats(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def test_two_settings_of_one_method_are_two_labelled_rows_with_their_own_seeds(tmp_path):
    few_shot_registry(tmp_path / "out", [30, 7])
    page = parse(write_report(tmp_path / "out", tmp_path / "report"))
    few_shot = next(t for t in page.tables if t[0][:3] == ["Dataset", "Method", "1 shots"])
    assert sorted(row[1:] for row in few_shot[1:]) == sorted([
        ["zeroshot", "33.00 ± 0.00"],  # its runs agree: one row, its plain name, its two seeds
        ["coop [train.epochs=30]", stats([ACCURACY[30, 1], ACCURACY[30, 2]])],
        ["coop [train.epochs=7]", stats([ACCURACY[7, 1], ACCURACY[7, 2]])]])
    compared = next(t for t in page.tables if "Seeds" in t[0] and "Shots" in t[0])
    seeds = {row[1]: row[3] for row in compared[1:]}
    assert seeds == {"zeroshot": "2", "coop [train.epochs=30]": "2", "coop [train.epochs=7]": "2"}


def test_a_single_setting_keeps_plain_names(tmp_path):
    few_shot_registry(tmp_path / "out", [30])
    reg = RunRegistry(tmp_path / "out")
    try:
        rows = reg.rows()
    finally:
        reg.close()
    assert [r.method for r in label_variants(rows)] == [r.method for r in rows]


def test_a_setting_one_run_lacks_is_named_unset_and_pending_rows_take_their_label(tmp_path):
    """A run recorded before an option existed has no value for it: its label says so."""
    few_shot_registry(tmp_path / "out", [30])
    reg = RunRegistry(tmp_path / "out")
    try:
        rows = [r for r in reg.rows() if r.method == "coop"]
    finally:
        reg.close()
    old = {**rows[0].config, "train": {k: v for k, v in rows[0].config["train"].items() if k != "model_selection"}}
    older = replace(rows[0], spec_id="older", config=old)  # the same seed and cell, recorded by an older vlprompt
    waiting = replace(rows[1], spec_id="waiting", state="pending", results=None)
    labelled = label_variants([*rows, older, waiting])
    value = rows[0].config["train"]["model_selection"]
    assert [r.method for r in labelled] == [f"coop [train.model_selection={value}]"] * 2 + [
        "coop [train.model_selection unset]", f"coop [train.model_selection={value}]"]
