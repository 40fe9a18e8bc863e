"""The analysis stage: what is computed from a finished run, written into its directory for the report to read.

Neural-collapse metrics of the final prompt on each evaluated class list (``neural_collapse.json``),
the per-epoch curves of the logged numbers (``metrics_curves.png``) and, for runs that track prompt
norms (Nemesis), the per-position norm curves (``prompt_norms.png``); ``analysis.json`` records that
the stage ran on the run's present results and what it wrote or why it left something out. The engine
only trains and evaluates; the stage reads what it wrote (config, artifact, metrics) and the feature
cache, so it can run after the fact, on any run, as often as wanted. Train and sweep runs pass
through it as they finish; ``vlprompt report`` never runs it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from vlprompt.analysis.metric_curves import NORM_PREFIX, plot_metric_curves
from vlprompt.analysis.neural_collapse import neural_collapse_metrics
from vlprompt.analysis.outputs import (
    CURVES_FIGURE,
    METRICS_FILE,
    NEURAL_COLLAPSE_FILE,
    NORMS_FIGURE,
    RECORD_FILE,
    RECORD_FORMAT,
    current_record,
    results_digest,
)
from vlprompt.analysis.prompt_norms import plot_norm_history
from vlprompt.data.feature_cache import FeatureCache
from vlprompt.data.sampling import subsample_classes
from vlprompt.engine.config import RunConfig
from vlprompt.engine.datasets import resolve_dataset, run_dataset
from vlprompt.engine.evaluate import encode_with_learner
from vlprompt.engine.run import RESULTS_FILE
from vlprompt.errors import ConfigError
from vlprompt.io import write_json
from vlprompt.learners.artifact import from_pretrained


def run_neural_collapse(run_dir: str | Path) -> dict:
    """Neural-collapse metrics per evaluated subset and dataset; {} where a class is not one vector: per-image
    prompts (CoCoOp), several prompts matched to image regions (PLOT)."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).is_file():
        raise ConfigError(f"{run_dir} has no {RESULTS_FILE}: analyse a finished run (rerun its train command)")
    config = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    learner = from_pretrained(run_dir / "prompt")
    if learner.image_conditioned or learner.uses_image_tokens:
        return {}
    cache = FeatureCache(Path(config.cache_dir).expanduser() / "features")
    data = run_dataset(config.data.dataset, config.data.root, config.data.split_file)
    parts = {subset: subsample_classes(data, subset)
             for subset in config.data.eval_subsets}
    parts.update({spec: resolve_dataset(spec, config.data.root) for spec in config.data.eval_datasets})
    found = {}
    for key, part in parts.items():
        classifier = learner.for_classes(part.classnames)
        if classifier.uses_image_tower:
            feats = encode_with_learner(classifier, part, part.test, desc=f"test features ({part.name})")
        else:
            feats = cache.features(learner.backbone, part, part.test, desc=f"test features ({part.name})")[0]
        labels = torch.tensor([r.label for r in part.test])
        if labels.unique().numel() > 1:
            with torch.no_grad():
                found[key] = neural_collapse_metrics(classifier.adapt_image_features(feats.to(learner.backbone.device)),
                                                     labels, classifier.text_features())
    return found


def analyze_run(run_dir: str | Path, again: bool = False) -> dict[str, Path]:
    """Write the run's analyses into its directory and the record of them; returns what was written.

    A run whose record matches its present results is left as it is (nothing returned) unless ``again``:
    a finished run passes through the stage each time its train or sweep command is repeated.
    """
    run_dir = Path(run_dir)
    if not again and current_record(run_dir) is not None:
        return {}
    digest = results_digest(run_dir)
    if digest is None:
        raise ConfigError(f"{run_dir} has no {RESULTS_FILE}: analyse a finished run (rerun its train command)")
    written, left_out = {}, {}
    metrics = run_dir / METRICS_FILE
    history = metrics.read_text() if metrics.is_file() else ""
    curves = plot_metric_curves(metrics, run_dir / CURVES_FIGURE) if history else None
    if curves:
        written["training curves"] = curves
    if NORM_PREFIX in history:
        written["prompt norms"] = plot_norm_history(metrics, run_dir / NORMS_FIGURE)
    if (run_dir / "prompt").is_dir():
        collapse = run_neural_collapse(run_dir)
        if collapse:
            write_json(run_dir / NEURAL_COLLAPSE_FILE, collapse)
            written["neural collapse"] = run_dir / NEURAL_COLLAPSE_FILE
        else:
            left_out["neural collapse"] = "a class is not one vector (per-image or several prompts per class)"
    for stale in {CURVES_FIGURE, NORMS_FIGURE, NEURAL_COLLAPSE_FILE} - {p.name for p in written.values()}:
        (run_dir / stale).unlink(missing_ok=True)  # left by an analysis of earlier results
    write_json(run_dir / RECORD_FILE, {"format": RECORD_FORMAT, "results_sha256": digest,
                                       "written": {k: p.name for k, p in written.items()}, "left_out": left_out})
    return written
