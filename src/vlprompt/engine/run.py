"""One run, end to end: config -> backbone -> data split -> (cached features) -> train -> evaluate -> files.

The run directory holds the resolved config, per-epoch metrics (JSONL), a resumable checkpoint,
``results.json`` and the prompt artifact, each written atomically. A run whose ``results.json``
exists is not repeated; one with a checkpoint resumes from it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import yaml

from vlprompt.backbones import load_backbone
from vlprompt.data.feature_cache import FeatureCache
from vlprompt.data.sampling import few_shot, imbalanced, subsample_classes
from vlprompt.data.templates import KINDS as TEMPLATE_KINDS
from vlprompt.data.templates import templates_for
from vlprompt.analysis.neural_collapse import neural_collapse_metrics
from vlprompt.analysis.prompt_norms import plot_norm_history
from vlprompt.engine.batches import FeatureBatches, ImageBatches
from vlprompt.engine.config import RunConfig
from vlprompt.engine.datasets import resolve_dataset
from vlprompt.engine.evaluate import encode_with_learner, evaluate_features
from vlprompt.engine.seeding import seed_everything
from vlprompt.engine.trainer import Trainer
from vlprompt.io import write_json, write_text
from vlprompt.learners.artifact import save_pretrained
from vlprompt.learners.registry import build_learner
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.registry import build_regularizer

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


def run_dir_of(config: RunConfig) -> Path:
    dataset = config.data.dataset.replace(":", "-").replace("/", "_")[-40:]
    regs = "+".join(r["name"] for r in config.regularizers)
    method = config.learner.name + (f"+{regs}" if regs else "")
    return Path(config.output_dir).expanduser() / f"{method}_{dataset}_seed{config.train.seed}_{config.run_id()}"


def harmonic_mean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def run_experiment(config: RunConfig, stop_after_epoch: int | None = None) -> dict:
    """Run (or resume, or skip) one configuration and return its results."""
    run_dir = run_dir_of(config)
    results_path = run_dir / RESULTS_FILE
    if results_path.is_file():
        log.info("results exist in %s; skipping", run_dir)
        return json.loads(results_path.read_text())
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now
        log.info("%s took %.1f s", stage, timings[stage])

    seed = config.train.seed
    seed_everything(seed)
    backbone = load_backbone(config.backbone.name, config.backbone.pretrained)
    data = resolve_dataset(config.data.dataset, config.data.root)
    cache = FeatureCache(Path(config.cache_dir).expanduser() / "features")
    lap("load")

    counts = None
    if config.data.shots is not None:
        data = few_shot(data, config.data.shots, seed, cache_dir=Path(config.cache_dir).expanduser() / "splits")
    if config.data.imbalance_ratio is not None:
        data, counts = imbalanced(data, config.data.imbalance_ratio, seed)
    train_data = subsample_classes(data, config.data.subsample)
    log.info("%s, %s classes: %s; torch threads: %d", config.data.dataset, config.data.subsample,
             train_data.summary(), torch.get_num_threads())
    learner = build_learner(config.learner.name, backbone, train_data.classnames, train_data.template,
                            **config.learner.options)
    regularizers = [build_regularizer(spec) for spec in config.regularizers]
    history: list[dict] = []
    trainer = None
    if learner.learnable_tensors():
        context = TrainContext(learner=learner, dataset=config.data.dataset,
                               templates={kind: templates_for(config.data.dataset, kind, train_data.template)
                                          for kind in TEMPLATE_KINDS})
        trainer = Trainer(learner, config.train, regularizers, context)
    # written once the config has been accepted (Trainer checks the composition): a refused one leaves no folder
    write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    if trainer is not None:
        labels = torch.tensor([r.label for r in train_data.train])
        if learner.uses_image_tower:
            batches = ImageBatches(backbone, train_data, train_data.train, config.train.batch_size, seed)
        else:
            feats = cache.features(backbone, train_data, train_data.train, views=config.train.views, seed=seed,
                                   desc="train features")
            batches = FeatureBatches(feats, labels, config.train.batch_size, seed)
        lap("train features")
        history = trainer.fit(batches, checkpoint=run_dir / "checkpoint.pt", metrics_path=run_dir / "metrics.jsonl",
                              stop_after_epoch=stop_after_epoch)
        lap("train")
        if any(key.startswith("nemesis_norm_") for key in history[-1]):
            plot_norm_history(run_dir / "metrics.jsonl", run_dir / "prompt_norms.png")
        if trainer.start_epoch < config.train.epochs:
            return {"interrupted_after_epoch": trainer.start_epoch, "run_dir": str(run_dir)}
    elif regularizers:
        log.warning("learner %s has nothing to train; regularizers are ignored", learner.name)

    def evaluate_on(part) -> dict:
        learner.set_classnames(part.classnames)
        if learner.uses_image_tower:  # the learner's prompts change the image features
            feats = encode_with_learner(learner, part, part.test, config.train.eval_batch_size,
                                        config.train.precision, desc=f"test features ({part.name})")
        else:
            feats = cache.features(backbone, part, part.test, desc=f"test features ({part.name})")[0]
        labels = torch.tensor([r.label for r in part.test])
        result = evaluate_features(learner, feats, labels, batch_size=config.train.eval_batch_size,
                                   precision=config.train.precision, desc=f"evaluate {part.name}")
        result["classnames"] = part.classnames
        if not learner.image_conditioned and labels.unique().numel() > 1:
            with torch.no_grad():
                result["neural_collapse"] = neural_collapse_metrics(feats, labels, learner.text_features())
        return result

    metrics: dict = {subset: evaluate_on(subsample_classes(data, subset)) for subset in config.data.eval_subsets}
    if "base" in metrics and "new" in metrics:
        metrics["harmonic_mean"] = harmonic_mean(metrics["base"]["accuracy"], metrics["new"]["accuracy"])
    if config.data.eval_datasets:
        metrics["datasets"] = {spec: evaluate_on(resolve_dataset(spec, config.data.root))
                               for spec in config.data.eval_datasets}
    lap("evaluate")

    learner.set_classnames(train_data.classnames)
    save_pretrained(learner, run_dir / "prompt", metadata={"run_id": config.run_id()})
    results = {
        "run_id": config.run_id(),
        "method": learner.name,
        "regularizers": [r["name"] for r in config.regularizers],
        "dataset": config.data.dataset,
        "seed": seed,
        "shots": config.data.shots,
        "backbone": backbone.identity.to_dict(),
        "metrics": metrics,
        "final_epoch": history[-1] if history else None,
        "per_class_train_counts": counts,
        "timings_s": timings,
        "run_dir": str(run_dir),
    }
    write_json(results_path, results)
    return results
