"""Split files in and out, so a run uses exactly the images a paper used and a paper can publish its own.

Two formats:

- ``coop``: CoOp's ``split_zhou_<Name>.json``, ``{"train"|"val"|"test": [[path, label, class name], ...]}``
  with paths relative to the dataset's image folder (read by ``split_json.read_split_file``).
  Given to a run, it replaces the dataset's three splits; few-shot sampling (``data.shots``) then
  draws from its training split as usual.
- ``jsonl``: the few-shot subsets FarinaMatteo/rethinking_fewshot_vlms publishes,
  ``shot_<K>-seed_<S>_{train,val}.jsonl``, one JSON object per line with the fields of Dassl's
  ``Datum`` (``_impath``, ``_label``, ``_domain``, ``_classname``). Given to a run (the ``_train``
  file; its ``_val`` sibling is used when present), it *is* the few-shot sample: its images replace
  the training (and validation) split and nothing is sampled again. Its paths are those of the
  machine that wrote it, so each is matched to the dataset's image with the longest common path
  ending, and its label must agree.

The writers produce paths relative to a base folder (the data root for JSONL, the image folder for
CoOp JSON), so a file names the same images on every machine.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from vlprompt.data.datasets.split_json import classnames_of, read_split_file
from vlprompt.data.records import SPLITS, DatasetSplits, ImageRecord
from vlprompt.errors import ConfigError, DataError
from vlprompt.io import write_text

FORMATS = ("coop", "jsonl")


def relative(record: ImageRecord, base: Path | None) -> str:
    """The record's path relative to ``base`` (posix separators); kept whole when it lies elsewhere."""
    if base is not None:
        try:
            return Path(record.path).relative_to(base).as_posix()
        except ValueError:
            pass
    return record.path


def coop_text(data: DatasetSplits, base: Path | None) -> str:
    content = {s: [[relative(r, base), r.label, r.classname] for r in data.split(s)] for s in SPLITS}
    return json.dumps(content, indent=4) + "\n"


def jsonl_text(records: list[ImageRecord], base: Path | None) -> str:
    return "".join(json.dumps({"_impath": relative(r, base), "_label": r.label, "_domain": -1,
                               "_classname": r.classname}) + "\n" for r in records)


def jsonl_names(shots: int | None, seed: int | None) -> dict[str, str]:
    """split -> file name: the reference's ``shot_K-seed_S_train.jsonl`` for a few-shot subset."""
    if shots is None:
        return {s: f"{s}.jsonl" for s in SPLITS}
    return {s: f"shot_{shots}-seed_{seed}_{s}.jsonl" for s in ("train", "val")}


def export_split(data: DatasetSplits, fmt: str, out: Path, base: Path | None, shots: int | None = None,
                 seed: int | None = None) -> list[Path]:
    """Write ``data``'s splits as ``fmt``: one CoOp JSON file ``out``, or JSONL files in the folder ``out``.

    A few-shot subset (``shots``) writes only train and val in JSONL, as the reference does; when val
    is the test split (ImageNet) no val file is written. Existing files are never replaced.
    """
    if fmt == "coop":
        targets = {out: coop_text(data, base)}
    else:
        names = jsonl_names(shots, seed)
        if shots is not None and data.val == data.test:
            names.pop("val")
        targets = {out / name: jsonl_text(data.split(split), base) for split, name in names.items()}
    existing = [p for p in targets if p.exists()]
    if existing:
        raise DataError(f"{existing[0]} already exists; nothing was written: choose another --out or move it aside")
    for path, text in targets.items():
        write_text(path, text)
    return list(targets)


@dataclass(frozen=True)
class Listed:
    """One JSONL line: where the file says the image is, its label and class name."""

    line: int
    path: str
    label: int
    classname: str


def read_jsonl(path: Path) -> list[Listed]:
    if not path.is_file():
        raise DataError(f"split file {path} does not exist")
    listed = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            listed.append(Listed(number, str(item["_impath"]), int(item["_label"]), str(item["_classname"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} line {number} is not a few-shot entry with _impath, _label and _classname "
                            f"({exc}); the file is not in the rethinking_fewshot_vlms JSONL format") from exc
    if not listed:
        raise DataError(f"split file {path} lists no images")
    return listed


def val_sibling(path: Path) -> Path | None:
    """``shot_16-seed_1_val.jsonl`` beside ``shot_16-seed_1_train.jsonl`` (or val.jsonl beside train.jsonl)."""
    if not path.name.endswith("train.jsonl"):
        return None
    sibling = path.with_name(path.name[: -len("train.jsonl")] + "val.jsonl")
    return sibling if sibling.is_file() else None


def _parts(path: str) -> tuple[str, ...]:
    return (PureWindowsPath(path) if "\\" in path else PurePosixPath(path)).parts


def match_listed(listed: list[Listed], records: list[ImageRecord], source: Path, split: str) -> list[ImageRecord]:
    """The records of ``split`` that the lines of ``source`` name, in file order: each line's path is matched
    to the record whose path shares the longest ending with it (unique), and the labels must agree."""
    by_name: dict[str, list[ImageRecord]] = {}
    for r in records:
        by_name.setdefault(Path(r.path).name, []).append(r)
    chosen = []
    for item in listed:
        parts = _parts(item.path)
        candidates = by_name.get(parts[-1], []) if parts else []

        def shared(r: ImageRecord) -> int:
            theirs = Path(r.path).parts
            n = 0
            while n < min(len(parts), len(theirs)) and parts[-1 - n] == theirs[-1 - n]:
                n += 1
            return n

        scores = sorted(((shared(r), k) for k, r in enumerate(candidates)), reverse=True)
        if not scores:
            raise DataError(f"{source} line {item.line}: {item.path} is not an image of the dataset's {split} split; "
                            "the file belongs to another dataset or split")
        if len(scores) > 1 and scores[0][0] == scores[1][0]:
            raise DataError(f"{source} line {item.line}: {item.path} matches {candidates[scores[0][1]].path} and "
                            f"{candidates[scores[1][1]].path} equally; give the dataset's own paths")
        record = candidates[scores[0][1]]
        if record.label != item.label:
            raise DataError(f"{source} line {item.line}: {item.path} has label {item.label} ({item.classname!r}); the "
                            f"dataset gives {record.path} label {record.label} ({record.classname!r}): the file belongs "
                            "to another dataset or version")
        chosen.append(record)
    duplicates = [p for p, n in Counter(r.path for r in chosen).items() if n > 1]
    if duplicates:
        raise DataError(f"{source} lists {duplicates[0]} more than once")
    return chosen


def check_split_file(path: str, shots: int | None) -> None:
    """Parse-time check of ``data.split_file``: it exists, is one of the two formats, and a few-shot subset
    agrees with ``data.shots`` (its largest class has ``shots`` images)."""
    p = Path(path).expanduser()
    if p.suffix not in (".json", ".jsonl"):
        raise ConfigError(f"data.split_file={path!r} must be a CoOp split_zhou .json file or a few-shot .jsonl file")
    if not p.is_file():
        raise ConfigError(f"data.split_file={path!r} does not exist; give the path of a split file "
                          "(vlprompt data export-split writes them)")
    try:
        if p.suffix == ".json":
            read_split_file(p, None)
            return
        listed = read_jsonl(p)
    except DataError as exc:
        raise ConfigError(f"data.split_file={path!r}: {exc}") from exc
    largest = max(Counter(item.label for item in listed).values())
    if shots is not None and shots != largest:
        raise ConfigError(f"data.split_file={path!r} is a {largest}-shot subset and data.shots={shots}; set "
                          f"data.shots={largest} (or null): the file is the sample, nothing is drawn again")


def is_subset(path: str | None) -> bool:
    """Whether a ``data.split_file`` is a few-shot subset (JSONL) rather than a whole split (CoOp JSON)."""
    return path is not None and Path(path).suffix == ".jsonl"


def apply_split_file(data: DatasetSplits, path: str | Path, base: Path | None) -> DatasetSplits:
    """``data`` with the splits of a split file: all three from CoOp JSON (paths relative to ``base``), or the
    training (and, with a ``_val`` sibling, validation) images of a JSONL few-shot subset."""
    path = Path(path).expanduser()
    if path.suffix == ".json":
        splits = read_split_file(path, base)
        classnames = classnames_of(splits["train"] + splits["test"])
        if classnames != data.classnames:
            differ = next((k for k, (a, b) in enumerate(zip(classnames, data.classnames)) if a != b),
                          min(len(classnames), len(data.classnames)))
            raise DataError(f"split file {path} does not fit {data.name}: its classes ({len(classnames)}) differ from "
                            f"the dataset's ({len(data.classnames)}) at label {differ}; give the split file of this "
                            "dataset")
        return data.with_splits(**splits)
    train = match_listed(read_jsonl(path), data.train, path, "train")
    sibling = val_sibling(path)
    val = match_listed(read_jsonl(sibling), data.val, sibling, "val") if sibling else data.val
    return data.with_splits(train=train, val=val)
