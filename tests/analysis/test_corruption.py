"""Corruption sweep (REPLACE / RESCALE), Low-Norm Effect frequency, written outputs, norm history, CLI."""

from __future__ import annotations

import argparse
import csv
import json

import pytest
import torch
import torch.nn.functional as F

from vlprompt.analysis.corruption import CorruptionTable, Setting, context_logits, corruption_sweep, grid
from vlprompt.analysis.prompt_norms import norm_history, plot_norm_history, position_norms
from vlprompt.cli.analyze import register
from vlprompt.errors import ConfigError
from vlprompt.learners.cocoop import CoCoOp
from vlprompt.learners.coop import CoOp

PNG_MAGIC = b"\x89PNG"


def trained_like(backbone, classnames, n_ctx=3):
    torch.manual_seed(0)
    learner = CoOp(backbone, classnames, n_ctx=n_ctx)
    with torch.no_grad():
        learner.ctx.mul_(40)
    g = torch.Generator().manual_seed(1)
    return learner, torch.randn(30, backbone.embed_dim, generator=g), torch.arange(30) % len(classnames)


def test_replace_with_zero_sigma_zeroes_the_position_and_rescale_by_one_changes_nothing():
    ctx = torch.randn(2, 4, 6)
    g = torch.Generator().manual_seed(0)
    zeroed = Setting("replace", 0.0).apply(ctx, 1, g)
    assert torch.equal(zeroed[:, 1], torch.zeros(2, 6))
    assert torch.equal(zeroed[:, [0, 2, 3]], ctx[:, [0, 2, 3]])
    assert torch.equal(Setting("rescale", 1.0).apply(ctx, 2, g), ctx)
    assert torch.allclose(Setting("rescale", 0.5).apply(ctx, 0, g)[:, 0], ctx[:, 0] * 0.5)
    noisy = Setting("replace", 2.0).apply(ctx, 3, torch.Generator().manual_seed(4))
    assert torch.equal(noisy, Setting("replace", 2.0).apply(ctx, 3, torch.Generator().manual_seed(4)))


def test_grid_holds_the_official_examples_plus_user_values():
    assert grid() == [Setting("replace", 0.0), Setting("rescale", 0.001)]
    assert grid([0.0, 0.01], [0.5]) == [Setting("replace", 0.0), Setting("replace", 0.01),
                                        Setting("rescale", 0.001), Setting("rescale", 0.5)]
    with pytest.raises(ConfigError, match="non-negative"):
        grid([-1.0])


def test_sweep_table_has_positions_x_settings_rows_and_exact_accuracies(tiny_backbone, classnames):
    learner, feats, labels = trained_like(tiny_backbone, classnames)
    table = corruption_sweep(learner, feats, labels, replace=[0.05], rescale=[1.0])
    assert len(table.rows) == 3 * 4
    assert {(r["position"], r["corruption"], r["factor"]) for r in table.rows} == {
        (p, s.kind, s.factor) for p in range(3) for s in grid([0.05], [1.0])}
    with torch.no_grad():
        expected = 100.0 * float((learner(features=feats).logits.argmax(-1) == labels).float().mean())
    assert table.baseline_accuracy == pytest.approx(expected)
    for r in table.rows:
        if r["corruption"] == "rescale" and r["factor"] == 1.0:
            assert r["accuracy_change"] == 0 and not r["norm_reduced"]
        if r["corruption"] == "replace" and r["factor"] == 0.0:
            assert r["norm_after"] == 0.0 and r["norm_reduced"]
            zeroed = learner.ctx.detach().clone()
            zeroed[r["position"]] = 0
            with torch.no_grad():
                text = F.normalize(learner.encode_context(zeroed), dim=-1)
            acc = 100.0 * float(((F.normalize(feats, dim=-1) @ text.t()).argmax(-1) == labels).float().mean())
            assert r["accuracy"] == pytest.approx(acc)


def test_frequency_counts_norm_reducing_improvements():
    def row(position, kind, factor, change, before, after):
        return {"position": position, "corruption": kind, "factor": factor, "accuracy": 50.0 + change, "accuracy_change": change,
                "norm_before": before, "norm_after": after, "norm_reduced": after < before, "improved": change > 0}

    rows = [row(0, "replace", 0.0, 2.0, 1.0, 0.0), row(0, "rescale", 2.0, 1.0, 1.0, 2.0),
            row(1, "replace", 0.0, 0.0, 1.0, 0.0), row(1, "rescale", 2.0, 3.0, 3.0, 0.5)]
    table = CorruptionTable(50.0, [Setting("replace", 0.0), Setting("rescale", 2.0)], 2, rows)
    assert table.low_norm_frequency == 2
    # lowered: positions 0 and 1 by replace (one improved) and position 1 by "rescale" (improved); raised: one
    assert table.norm_direction_counts() == {"lowered": (2, 3), "raised": (1, 1)}
    assert "Accuracy rose in 2 of 3 settings that lowered a position's norm and in 1 of 1 that raised it" in (
        table.to_markdown())
    assert table.change_matrix().tolist() == [[2.0, 1.0], [0.0, 3.0]]


def test_written_outputs(tmp_path, tiny_backbone, classnames):
    learner, feats, labels = trained_like(tiny_backbone, classnames, n_ctx=2)
    table = corruption_sweep(learner, feats, labels)
    paths = table.write(tmp_path / "out")
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and float(rows[0]["accuracy"]) == pytest.approx(table.rows[0]["accuracy"])
    text = paths["markdown"].read_text()
    assert f"Low-Norm Effect frequency: {table.low_norm_frequency} of 4" in text and "rescale α=0.001" in text
    assert paths["heatmap"].read_bytes().startswith(PNG_MAGIC)
    lowered = [r for r in rows if float(r["norm_after"]) < float(r["norm_before"])]
    raised = [r for r in rows if float(r["norm_after"]) > float(r["norm_before"])]
    summary = json.loads(paths["summary"].read_text())
    assert summary == {"baseline_accuracy": table.baseline_accuracy, "settings": 4,
                       "low_norm_frequency": sum(float(r["accuracy_change"]) > 0 for r in lowered),
                       "lowered": {"improved": sum(float(r["accuracy_change"]) > 0 for r in lowered),
                                   "settings": len(lowered)},
                       "raised": {"improved": sum(float(r["accuracy_change"]) > 0 for r in raised),
                                  "settings": len(raised)}}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "corruption.csv", "corruption.json", "corruption.md", "corruption_heatmap.png"]


def test_cocoop_path_matches_its_forward(tiny_backbone, classnames):
    torch.manual_seed(0)
    learner = CoCoOp(tiny_backbone, classnames)
    feats = torch.randn(5, tiny_backbone.embed_dim)
    with torch.no_grad():
        assert torch.allclose(context_logits(learner, learner.ctx.detach(), feats, batch_size=2),
                              learner(features=feats).logits, atol=1e-5)
    corrupted = Setting("replace", 0.0).apply(learner.ctx, 0, torch.Generator())
    with torch.no_grad():
        assert not torch.allclose(context_logits(learner, corrupted, feats), learner(features=feats).logits)


def test_norm_history_plot(tmp_path):
    assert position_norms(torch.tensor([[3.0, 4.0], [1.0, 0.0]])).tolist() == [5.0, 1.0]
    assert position_norms(torch.tensor([[3.0, -4.0]]), p=1).tolist() == [7.0]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"epoch": e, "nemesis_norm_0": 1.0 / e, "nemesis_norm_1": 2.0}) + "\n"
                               for e in (1, 2)))
    assert norm_history(metrics) == ([1, 2], {0: [1.0, 0.5], 1: [2.0, 2.0]})
    out = plot_norm_history(metrics, tmp_path / "norms.png")
    assert out.read_bytes().startswith(PNG_MAGIC)
    (tmp_path / "plain.jsonl").write_text(json.dumps({"epoch": 1, "loss_ce": 1.0}) + "\n")
    with pytest.raises(ConfigError, match="nemesis"):
        norm_history(tmp_path / "plain.jsonl")


def test_cli_parses_the_corruption_command():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["analyze", "corruption", "--prompt", "p", "--dataset", "world:shapes",
                              "--replace", "0,0.01", "--rescale", "0.001,0.5", "--out", "o"])
    assert (args.replace, args.rescale, args.root, args.seed) == ([0.0, 0.01], [0.001, 0.5], None, 0)
    assert args.func.__name__ == "cmd_corruption"
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "corruption", "--prompt", "p", "--dataset", "d", "--replace", "x", "--out", "o"])


def test_cli_corruption_end_to_end(tmp_path, tiny_backbone, classnames, image_folder_factory, monkeypatch, capsys):
    import vlprompt.engine.datasets as datasets
    import vlprompt.learners.artifact as artifact
    from vlprompt.data.records import DatasetSplits, ImageRecord

    root = image_folder_factory(tmp_path / "images", classnames=classnames[:3], per_class=2, splits=("test",))
    test = [ImageRecord(str(p), k, name) for k, name in enumerate(classnames[:3])
            for p in sorted((root / "test" / name).iterdir())]
    data = DatasetSplits("tiny", classnames[:3], [], [], test)
    monkeypatch.setattr(datasets, "resolve_dataset", lambda spec, root=None: data)
    torch.manual_seed(0)
    artifact.save_pretrained(CoOp(tiny_backbone, classnames[:3], n_ctx=2), tmp_path / "prompt")
    loader = artifact.from_pretrained
    monkeypatch.setattr(artifact, "from_pretrained", lambda d, classnames=None: loader(d, classnames, tiny_backbone))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["analyze", "corruption", "--prompt", str(tmp_path / "prompt"), "--dataset", "tiny",
                              "--rescale", "0.5", "--out", str(tmp_path / "out")])
    assert args.func(args) == 0
    with open(tmp_path / "out" / "corruption.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2 * 3
    assert "Low-Norm Effect frequency" in capsys.readouterr().out
