"""One run, end to end, as pure stages: ``prepare -> fit -> evaluate -> record``.

``prepare`` loads the backbone and data and builds the method; ``fit`` trains it (resuming from a
checkpoint); ``evaluate`` scores a classifier for one class list without touching the trained
learner; ``record`` writes ``results.json`` and the prompt artifact. The run directory also holds
the resolved config and per-epoch metrics (JSONL), each written atomically. A run whose
``results.json`` exists is not repeated; one with a checkpoint resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml

from vlprompt.backbones import Backbone, load_backbone
from vlprompt.data.feature_cache import FeatureCache
from vlprompt.data.records import DatasetSplits
from vlprompt.data.sampling import subsample_classes
from vlprompt.engine.config import RunConfig
from vlprompt.engine.datasets import resolve_dataset
from vlprompt.engine.device import resolve_device
from vlprompt.engine.distributed import init_from_env, is_main, main_first, world
from vlprompt.engine.evaluate import encode_with_learner, evaluate_features
from vlprompt.engine.inputs import RunInputs, check_inputs
from vlprompt.engine.method import Method, build_method, records_features, size_text_chunk, train_method
from vlprompt.engine.run_lock import hold_run
from vlprompt.engine.seeding import seed_everything
from vlprompt.engine.split import sample_split, split_hash, tested_data
from vlprompt.io import write_json, write_text
from vlprompt.learners.artifact import save_pretrained
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.capabilities import Capability
from vlprompt.metrics import harmonic_mean
from vlprompt.regularizers.base import Regularizer

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


DATASET_LABEL_CHARS = 40


def dataset_label(spec: str) -> str:
    """The dataset's part of a run folder's name: ``world-objects``, ``folder-my_images``, ``csv-labels``.

    A user's folder or CSV is named by its last path part (the hash in the name tells paths apart), in
    NFC so that accents stay whole; a long name is cut after its last whole word (only one overlong
    word is cut inside).
    """
    kind, _, arg = spec.partition(":")
    if kind in ("folder", "csv") and arg:
        parts = [p for p in re.split(r"[\\/]+", arg) if p not in ("", ".", "..")]
        name = parts[-1] if parts else ""
        spec = f"{kind}-{Path(name).stem if kind == 'csv' else name}"
    label = re.sub(r"[^\w.+-]+", "_", unicodedata.normalize("NFC", spec.replace(":", "-"))).strip("_.-")
    if len(label) > DATASET_LABEL_CHARS:
        cut = label[:DATASET_LABEL_CHARS + 1]
        words = re.match(r"(.*\w)[_.+-]", cut)  # the longest prefix that ends a word; one long word is cut
        label = words.group(1) if words and len(words.group(1)) > DATASET_LABEL_CHARS // 2 else cut[:-1]
    return label or "data"


def run_dir_of(config: RunConfig) -> Path:
    """OUTPUT_DIR/METHOD_DATASET_seedS_HASH: readable, and unique by the config's hash."""
    name = f"{config.method()}_{dataset_label(config.data.dataset)}_seed{config.train.seed}_{config.run_id()}"
    return Path(config.output_dir).expanduser() / name


@dataclass
class PreparedRun:
    """Everything a run trains and evaluates with; built by ``prepare``."""

    config: RunConfig
    run_dir: Path
    backbone: Backbone
    data: DatasetSplits  # after few-shot sampling and imbalance, all classes
    train_data: DatasetSplits  # the classes trained on
    learner: PromptLearner
    regularizers: list[Regularizer]
    cache: FeatureCache
    per_class_train_counts: list[int] | None = None
    eval_datasets: dict[str, DatasetSplits] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    model_selection: dict | None = None  # which epoch's tensors the learner holds (set by fit)


def _lap(run: PreparedRun, stage: str, start: float) -> None:
    """Record and log how long a stage took."""
    run.timings[stage] = round(time.perf_counter() - start, 3)
    log.info("%s took %.1f s", stage, run.timings[stage])


def prepare(config: RunConfig, inputs: RunInputs | None = None) -> PreparedRun:
    """Load the backbone and data, build the learner and its regularizers and sample the split.

    The learner is built, and every class list the run evaluates checked against it, before the
    split is sampled (and its cache file written): a class name that does not fit the text context
    leaves nothing behind.
    """
    start = time.perf_counter()
    inputs = inputs or check_inputs(config)
    seed = config.train.seed
    seed_everything(seed)
    device = init_from_env(resolve_device(config.train.device))
    backbone = load_backbone(config.backbone.name, config.backbone.pretrained, device=device,
                             precision=config.backbone.precision)
    classes = subsample_classes(inputs.dataset, config.data.subsample)  # sampling keeps every class
    method = build_method(backbone, classes.classnames, config.learner, config.regularizers, classes.template)
    learner = method.learner
    evaluated = [subsample_classes(inputs.dataset, s) for s in config.data.eval_subsets]
    for part in evaluated + list(inputs.eval_datasets.values()):
        if part.classnames != classes.classnames:
            learner.for_classes(part.classnames)  # tokenises their prompts: a name too long is refused now
    with main_first():  # rank 0 samples (and writes) the split; the other processes read it
        data, train_data, counts = sample_split(config, inputs.dataset)
    log.info("%s, %s classes: %s; torch threads: %d", config.data.dataset, config.data.subsample,
             train_data.summary(), torch.get_num_threads())
    size_text_chunk(learner, config.train)
    prepared = PreparedRun(config, run_dir_of(config), backbone, data, train_data, learner, method.regularizers,
                           FeatureCache(Path(config.cache_dir).expanduser() / "features"), counts,
                           inputs.eval_datasets)
    _lap(prepared, "load", start)
    return prepared


def fit(run: PreparedRun, stop_after_epoch: int | None = None) -> list[dict]:
    """Build the learner's cache model (if it has one) and train it (resuming from the run's checkpoint);
    returns the per-epoch history."""
    config = run.config

    def features(records: list, **kwargs) -> torch.Tensor:
        with main_first():  # rank 0 encodes and writes the features; the other processes load them
            return frozen_features(run, run.train_data, records, **kwargs)

    validate = validation_accuracy(run) if config.train.model_selection == "best_val" else None
    fitted = train_method(Method(run.learner, run.regularizers), run.train_data, config.train, features,
                          dataset=config.data.dataset, workers=config.data.workers,
                          checkpoint=run.run_dir / "checkpoint.pt", metrics_path=run.run_dir / "metrics.jsonl",
                          stop_after_epoch=stop_after_epoch, validate=validate)
    for stage, seconds in fitted.timings.items():
        run.timings[stage] = seconds
        log.info("%s took %.1f s", stage, seconds)
    run.model_selection = fitted.model_selection
    return fitted.history


def frozen_features(run: PreparedRun, part: DatasetSplits, records: list, **kwargs) -> torch.Tensor:
    """The frozen image tower's features of ``records`` from the run's cache, (views, N, ...) in the form the
    learner reads: pooled, or with the regions' tokens."""
    return records_features(run.cache, run.learner, part, run.config.data.workers)(records, **kwargs)


def validation_accuracy(run: PreparedRun):
    """A function giving the learner's accuracy on the validation split as it stands (best_val selection);
    frozen image features are encoded once, a prompted image tower's at every call."""
    config, data, learner = run.config, run.train_data, run.learner
    labels = torch.tensor([r.label for r in data.val])
    cached = None if learner.uses_image_tower else frozen_features(run, data, data.val,
                                                                   desc="validation features")[0]

    def accuracy() -> float:
        feats = cached if cached is not None else encode_with_learner(
            learner, data, data.val, config.train.eval_batch_size, config.train.precision,
            desc="validation features", workers=config.data.workers)
        return evaluate_features(learner, feats, labels, batch_size=config.train.eval_batch_size,
                                 precision=config.train.precision, desc="validate")["accuracy"]

    return accuracy


def select_on_validation(run: PreparedRun) -> dict | None:
    """Hyper-parameters that the learner's paper chooses on the validation split, chosen there after
    training (None when the learner chooses nothing; ``check_inputs`` made sure the split has images)."""
    learner, data = run.learner, run.train_data
    if Capability.VALIDATION_SEARCH not in learner.offers:
        return None
    start = time.perf_counter()
    feats = frozen_features(run, data, data.val, desc="validation features")[0]
    chosen = learner.select_on_validation(feats, torch.tensor([r.label for r in data.val]))
    log.info("%s chose on %d validation images: %s", learner.name, len(data.val), chosen)
    _lap(run, "validation search", start)
    return chosen


def evaluate(run: PreparedRun, part: DatasetSplits, split: str | None = None) -> dict:
    """Test metrics of the trained prompt as a classifier of ``part``'s classes (the learner is untouched).

    ``split`` ("base"/"new") tells a split-aware learner which split the test images come from; None
    scores them through its split-agnostic path (the only path of every other learner).
    """
    config = run.config
    classifier = run.learner.for_classes(part.classnames)
    classifier.set_inference_split(split)  # on the view only: the trained learner keeps its own mode
    if classifier.uses_image_tower:  # the learner's prompts change the image features
        feats = encode_with_learner(classifier, part, part.test, config.train.eval_batch_size,
                                    config.train.precision, desc=f"test features ({part.name})",
                                    workers=config.data.workers)
    else:
        feats = frozen_features(run, part, part.test, desc=f"test features ({part.name})")[0]
    labels = torch.tensor([r.label for r in part.test])
    told = f", told {split}" if split else ""
    result = evaluate_features(classifier, feats, labels, batch_size=config.train.eval_batch_size,
                               precision=config.train.precision, desc=f"evaluate {part.name}{told}")
    result["classnames"] = part.classnames
    return result


SPLITS = ("base", "new")


def inference_mode(learner: PromptLearner) -> str:
    """How the run's test images were scored: "split_aware" when the learner is told base/new at test time
    (its results also hold the split-agnostic numbers), else "split_agnostic"."""
    return "split_aware" if Capability.SPLIT_AWARE in learner.offers else "split_agnostic"


def evaluate_all(run: PreparedRun) -> dict:
    """Metrics on every evaluation subset and dataset of the config, with H for base and new.

    The main numbers of every learner are split-agnostic, so a table of all methods compares like with
    like; a split-aware learner's base and new subsets are evaluated a second time told their split,
    recorded under ``metrics[subset]["split_aware"]`` with their own ``split_aware_harmonic_mean``.
    """
    start = time.perf_counter()
    data = run.config.data
    metrics: dict = {subset: evaluate(run, subsample_classes(run.data, subset)) for subset in data.eval_subsets}
    if inference_mode(run.learner) == "split_aware":
        for subset in SPLITS:
            if subset in metrics:
                told = evaluate(run, subsample_classes(run.data, subset), split=subset)
                metrics[subset]["split_aware"] = {k: v for k, v in told.items() if k != "classnames"}
    if "base" in metrics and "new" in metrics:
        metrics["harmonic_mean"] = harmonic_mean(metrics["base"]["accuracy"], metrics["new"]["accuracy"])
        if "split_aware" in metrics["base"]:
            metrics["split_aware_harmonic_mean"] = harmonic_mean(metrics["base"]["split_aware"]["accuracy"],
                                                                 metrics["new"]["split_aware"]["accuracy"])
    if data.eval_datasets:
        metrics["datasets"] = {spec: evaluate(run, run.eval_datasets.get(spec) or resolve_dataset(spec, data.root))
                               for spec in data.eval_datasets}
    _lap(run, "evaluate", start)
    return metrics


def record(run: PreparedRun, metrics: dict, history: list[dict], selected: dict | None = None) -> dict:
    """Write the prompt artifact and ``results.json`` (last, so its presence means the run is done)."""
    config = run.config
    save_pretrained(run.learner, run.run_dir / "prompt", metadata={"run_id": config.run_id()})
    results = {
        "run_id": config.run_id(),
        "method": config.learner.name,
        "regularizers": [r.name for r in config.regularizers],
        "dataset": config.data.dataset,
        "seed": config.train.seed,
        "shots": config.data.shots,
        "backbone": run.backbone.identity.to_dict(),
        "metrics": metrics,
        "inference": inference_mode(run.learner),
        "final_epoch": history[-1] if history else None,
        "model_selection": run.model_selection,
        "selected_on_validation": selected,
        "per_class_train_counts": run.per_class_train_counts,
        "split_hash": split_hash(run.train_data, tested_data(config, run.data)),
        "split_file": split_file_record(config.data.split_file),
        "timings_s": run.timings,
        "run_dir": str(run.run_dir),
    }
    write_json(run.run_dir / RESULTS_FILE, results)
    return results


def split_file_record(path: str | None) -> dict | None:
    """The split file a run used, with its SHA-256: the exact images can be traced to the published file."""
    if path is None:
        return None
    return {"path": str(Path(path).expanduser().absolute()),
            "sha256": hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()}


@dataclass
class RunResult:
    """What ``run_experiment`` gives back, one shape for every outcome (``status``):

    - ``finished``: the run is done (now or before); ``results`` is its ``results.json``;
    - ``interrupted``: training stopped after ``epochs_done`` epochs (``stop_after_epoch``); rerunning resumes;
    - ``share``: this process (``rank``) trained its share of a multi-process run whose process 0 records it.
    """

    status: Literal["finished", "interrupted", "share"]
    run_dir: Path
    results: dict | None = None
    epochs_done: int | None = None
    rank: int | None = None

    @property
    def metrics(self) -> dict:
        """The finished run's metrics (``results["metrics"]``); asking an unfinished run is an error."""
        if self.results is None:
            raise RuntimeError(f"the run in {self.run_dir} is {self.status}, not finished: it has no metrics yet")
        return self.results["metrics"]


def run_experiment(config: RunConfig, stop_after_epoch: int | None = None,
                   lock_timeout: float | None = None) -> RunResult:
    """Run (or resume, or skip) one configuration; one process per run directory.

    Every input is checked, and the method built, before the run directory is locked (and so
    created): a run that cannot work leaves nothing behind.
    """
    run_dir = run_dir_of(config)
    if (run_dir / RESULTS_FILE).is_file():
        return _finished(run_dir)
    run = prepare(config, check_inputs(config))
    if not is_main():  # another process of the same run (torchrun): trains its share, writes nothing
        rank, size = world()
        log.info("process %d of %d trains its share of each batch; process 0 writes %s", rank, size, run_dir)
        fit(run, stop_after_epoch)
        return RunResult("share", run_dir, rank=rank)
    with hold_run(run_dir, timeout=lock_timeout):
        if (run_dir / RESULTS_FILE).is_file():  # another process finished it while this one waited
            return _finished(run_dir)
        write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        history = fit(run, stop_after_epoch)
        if history and len(history) < config.train.epochs:
            return RunResult("interrupted", run_dir, epochs_done=len(history))
        selected = select_on_validation(run)
        return RunResult("finished", run_dir, record(run, evaluate_all(run), history, selected))


def _finished(run_dir: Path) -> RunResult:
    log.info("results exist in %s; skipping", run_dir)
    return RunResult("finished", run_dir, json.loads((run_dir / RESULTS_FILE).read_text()))
