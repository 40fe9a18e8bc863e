"""``vlprompt data verify``: what of each standard dataset is present, missing or unreadable.

For each dataset: the folder, split and class-name files it needs (with where to get them), then
every image its splits list (existence; with ``decode`` also that it opens), and whether the class
names of a split file are those the reference derives from its paths (a split file of other images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlprompt.data.datasets import DATASETS, expected_files, read_dataset, split_json
from vlprompt.data.datasets.class_names import NAME_FROM_PATH
from vlprompt.data.prepare import fix_commands
from vlprompt.data.records import ImageRecord, load_image_file
from vlprompt.errors import DataError, VlpromptError
from vlprompt.progress import Progress

MAX_LISTED = 10


@dataclass
class DatasetReport:
    name: str
    root: str
    missing_files: list[tuple[str, str]] = field(default_factory=list)  # (path, what to do)
    error: str | None = None
    images: int = 0
    missing_images: list[str] = field(default_factory=list)
    unreadable_images: list[str] = field(default_factory=list)
    wrong_names: list[str] = field(default_factory=list)  # one line per (stored, expected) name pair

    @property
    def ok(self) -> bool:
        return not (self.missing_files or self.error or self.missing_images or self.unreadable_images
                    or self.wrong_names)


def wrong_class_names(name: str, root: str | Path, records: list[ImageRecord]) -> list[str]:
    """Split-file class names that differ from the reference's naming of the same paths."""
    namer = NAME_FROM_PATH.get(name)
    if namer is None:
        return []
    layout = split_json.LAYOUTS[name]
    image_dir = layout.dataset_dir(Path(root)) / layout.image_dir
    examples: dict[tuple[str, str | None], str] = {}
    for r in records:
        try:
            relpath = Path(r.path).relative_to(image_dir).as_posix()
        except ValueError:  # an absolute path in the split file: nothing to derive a name from
            continue
        expected = namer(relpath)
        if expected != r.classname:
            examples.setdefault((r.classname, expected), r.path)
    return [f"{path}: the split file names its class {stored!r}, the reference's naming of the path gives "
            f"{expected!r}" for (stored, expected), path in examples.items()]


def verify_dataset(name: str, root: str | Path, decode: bool = False) -> DatasetReport:
    report = DatasetReport(name, str(root))
    for path, help_text in expected_files(name, root):
        if not path.exists():
            report.missing_files.append((str(path), help_text))
    try:
        data = read_dataset(name, root)
    except VlpromptError as exc:
        report.error = str(exc)
        return report
    records = {r.path: r for r in data.train + data.val + data.test}
    report.images = len(records)
    report.wrong_names = wrong_class_names(name, root, list(records.values()))
    for path, record in Progress(records.items(), f"verify {name}", unit="img"):
        if not Path(path).is_file():
            report.missing_images.append(path)
        elif decode:
            try:
                load_image_file(record)
            except DataError:
                report.unreadable_images.append(path)
    return report


def verify_datasets(root: str | Path, names: list[str] | None = None, decode: bool = False) -> list[DatasetReport]:
    """Reports of ``names`` (default: every standard dataset); a root that is no folder is refused first."""
    if not Path(root).is_dir():
        what = "is a file, not a folder" if Path(root).exists() else "does not exist"
        raise DataError(f"data root {root} {what}; give the folder that holds the dataset folders "
                        "(oxford_pets/, dtd/, ...)")
    for name in names or []:
        DATASETS.get(name)  # an unknown name is refused with the valid ones
    return [verify_dataset(n, root, decode) for n in (names or sorted(DATASETS))]


def format_report(reports: list[DatasetReport]) -> str:
    lines = []
    for r in reports:
        status = "OK" if r.ok else "PROBLEMS"
        lines.append(f"{r.name}: {status} ({r.images} images listed)")
        for path, help_text in r.missing_files:
            lines.append(f"  missing {path} (from: {help_text})")
        if r.error and not r.missing_files:
            lines.append(f"  cannot read: {r.error}")
        if r.missing_files:
            fix, *online = fix_commands(r.name, r.root)
            lines.append(f"  -> fix: {fix}")
            lines += [f"  -> or, online: {line}" for line in online]
        for kind, paths in (("missing image", r.missing_images), ("unreadable image", r.unreadable_images)):
            for p in paths[:MAX_LISTED]:
                lines.append(f"  {kind} {p}")
            if len(paths) > MAX_LISTED:
                lines.append(f"  ... and {len(paths) - MAX_LISTED} more {kind}s")
            if paths:
                lines.append(f"  -> restore the {kind}s from the dataset's archive (same relative paths)")
        for line in r.wrong_names[:MAX_LISTED]:
            lines.append(f"  wrong class name: {line}")
        if r.wrong_names:
            lines.append(f"  -> the split file does not belong to these images; get the one of {r.name} "
                         f"({split_json.SPLITS_HELP})")
    return "\n".join(lines)
