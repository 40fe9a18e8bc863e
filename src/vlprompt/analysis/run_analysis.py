"""Analyses of a finished run, computed from its directory: neural-collapse metrics of the final
prompt on each evaluated class list (``neural_collapse.json``) and, for runs that track prompt norms
(Nemesis), the per-position norm curves (``prompt_norms.png``).

The engine only trains and evaluates; these read what it wrote (config, artifact, metrics) and the
feature cache, so they can run after the fact, on any run, as often as wanted.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from vlprompt.analysis.neural_collapse import neural_collapse_metrics
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

NEURAL_COLLAPSE_FILE = "neural_collapse.json"
NORMS_FIGURE = "prompt_norms.png"


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


def analyze_run(run_dir: str | Path) -> dict[str, Path]:
    """Write the run's analyses into its directory; returns what was written."""
    run_dir = Path(run_dir)
    written = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and "nemesis_norm_" in metrics.read_text():
        written["prompt norms"] = plot_norm_history(metrics, run_dir / NORMS_FIGURE)
    collapse = run_neural_collapse(run_dir)
    if collapse:
        write_json(run_dir / NEURAL_COLLAPSE_FILE, collapse)
        written["neural collapse"] = run_dir / NEURAL_COLLAPSE_FILE
    return written
