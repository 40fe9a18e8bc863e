"""Every input of a run checked before anything is written: output folders, datasets, class counts, images.

A run that would fail on its data fails here, with one message naming the option, file or class and
what to do, and leaves nothing behind: no run folder, lock, config or split cache. The checks need
no model, so they also come before any backbone loads. (Class names that do not fit the backbone's
text context are refused when the learner is built, which also precedes every write.)
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from vlprompt.data.records import DatasetSplits, unreadable_images
from vlprompt.data.sampling import subsample_classes
from vlprompt.engine.config import OWN_DATA_KINDS, RunConfig
from vlprompt.engine.datasets import resolve_dataset, run_dataset
from vlprompt.errors import ConfigError, DataError
from vlprompt.learners.capabilities import Capability
from vlprompt.learners.registry import LEARNERS

log = logging.getLogger(__name__)

MIN_CLASSES = 2  # fewer and a classifier has nothing to choose between: its accuracy is 100% by construction
MAX_LISTED = 50


@dataclass
class RunInputs:
    """The datasets of a run, read and checked once."""

    dataset: DatasetSplits
    eval_datasets: dict[str, DatasetSplits] = field(default_factory=dict)


def check_inputs(config: RunConfig) -> RunInputs:
    """Check everything a run reads or writes that needs no model; raise a ConfigError or DataError."""
    check_writable_folder("output_dir", config.output_dir)
    check_writable_folder("cache_dir", config.cache_dir)
    data = config.data
    dataset = run_dataset(data.dataset, data.root, data.split_file)
    check_class_counts(config, dataset)
    check_validation_split(config, dataset)
    others = {spec: resolve_dataset(spec, data.root) for spec in data.eval_datasets}
    for spec, other in others.items():
        if other.num_classes < MIN_CLASSES:
            raise DataError(f"data.eval_datasets: {spec} has {_classes(other.classnames)}; evaluating needs at "
                            f"least {MIN_CLASSES} classes to choose between; add classes or remove it")
    for spec, part in [(data.dataset, dataset), *others.items()]:
        if spec.startswith(OWN_DATA_KINDS):
            check_images(spec, part)
    return RunInputs(dataset, others)


def check_validation_split(config: RunConfig, dataset: DatasetSplits) -> None:
    """A run that chooses anything on the validation split (the learner's hyper-parameters, or the epoch
    kept) needs validation images of the classes it trains on."""
    if subsample_classes(dataset, config.data.subsample).val:
        return
    spec = config.data.dataset
    learner = config.learner.name
    if Capability.VALIDATION_SEARCH in LEARNERS.get(learner).capabilities_of(config.learner.options):
        raise DataError(f"{learner} chooses its hyper-parameters on the validation split, and {spec} has no "
                        "validation images; give the dataset a val split (or turn the search off, e.g. "
                        "learner.options.search_scale=[])")
    if config.train.model_selection == "best_val":
        raise DataError(f"train.model_selection=best_val keeps the epoch with the best validation accuracy, and "
                        f"{spec} has no validation images; give the dataset a val split or use "
                        "train.model_selection=last")


def check_writable_folder(option: str, value: str) -> None:
    """``value`` is a folder, or can be made one, that this process may write in."""
    path = Path(value).expanduser()
    for existing in (path, *path.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            where = "is a file" if existing == path else f"lies under {existing}, which is a file"
            raise ConfigError(f"{option}={value} {where}, not a folder; give a folder (it is created when missing)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{option}={value}: no permission to write in {existing}; give a folder you can "
                              "write to")
        return


def check_class_counts(config: RunConfig, dataset: DatasetSplits) -> None:
    """The classes trained on and each evaluated subset have at least two classes (so base-to-new needs four)."""
    labels = sorted({r.label for r in dataset.train}) or list(range(dataset.num_classes))
    names = [dataset.classnames[k] for k in labels]
    base = math.ceil(len(names) / 2)
    counts = {"all": len(names), "base": base, "new": len(names) - base}
    spec = config.data.dataset
    if counts["all"] < MIN_CLASSES:
        raise DataError(f"data.dataset={spec} has {_classes(names)} with training images; a classifier needs at "
                        f"least {MIN_CLASSES} classes to choose between; add classes (for a folder: one "
                        "sub-folder of images per class)")
    used = [("data.subsample", config.data.subsample)]
    used += [("data.eval_subsets", s) for s in config.data.eval_subsets]
    for option, subset in used:
        if counts[subset] < MIN_CLASSES:
            raise DataError(f"{option}={subset}: the {subset} half of the {len(names)} classes of {spec} has "
                            f"{counts[subset]} class(es) (base {counts['base']}, new {counts['new']}); a base/new "
                            f"split needs at least {2 * MIN_CLASSES} classes, {MIN_CLASSES} per half; add classes "
                            "or use all of them (data.subsample=all data.eval_subsets=[all])")


def check_images(spec: str, dataset: DatasetSplits) -> None:
    """Every image of the user's folder or CSV opens; all that do not are listed in one message."""
    start = time.perf_counter()
    records = dataset.train + dataset.val + dataset.test
    problems = unreadable_images(records)
    if problems:
        fix = ("fix or delete their rows in the CSV file" if spec.startswith("csv:")
               else "replace or delete these files") + ", then rerun"
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DataError(f"{len(problems)} of the {len({r.path for r in records})} images of {spec} cannot be "
                        "read:\n  " + "\n  ".join(shown) + more + "\n" + fix)
    log.info("%s: every image opens (%.1f s)", spec, time.perf_counter() - start)


def _classes(names: list[str]) -> str:
    listed = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{len(names)} class{'' if len(names) == 1 else 'es'}" + (f" ({listed})" if names else "")
