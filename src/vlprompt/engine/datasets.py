"""Dataset specs as configs name them: ``world:TASK``, ``folder:PATH``, ``csv:PATH`` or a standard name."""

from __future__ import annotations

from pathlib import Path

from vlprompt.data.records import DatasetSplits
from vlprompt.data.split_files import apply_split_file
from vlprompt.errors import ConfigError


def list_datasets() -> list[str]:
    """Every dataset spec ``resolve_dataset`` reads: the standard names, the world's tasks, user data."""
    from vlprompt.data.datasets import DATASETS
    from vlprompt.world.tasks import TASKS

    return DATASETS.names() + [f"world:{t}" for t in TASKS] + ["folder:PATH", "csv:PATH"]


def resolve_dataset(spec: str, root: str | None = None) -> DatasetSplits:
    kind, _, arg = spec.partition(":")
    if arg:
        if kind == "world":
            from vlprompt.world.tasks import load_task

            return load_task(arg)
        if kind == "folder":
            from vlprompt.data.folder import read_image_folder

            return read_image_folder(arg)
        if kind == "csv":
            from vlprompt.data.csv_dataset import read_csv_dataset

            return read_csv_dataset(arg, root=root)
        raise ConfigError(f"data.dataset={spec!r}: unknown kind {kind!r}; use world:TASK, folder:PATH, csv:PATH "
                          "or a standard dataset name with data.root")
    from vlprompt.data.datasets import read_dataset

    if root is None:
        raise ConfigError(f"data.dataset={spec!r} needs data.root=DIR, the folder that holds the datasets")
    return read_dataset(spec, root)


def split_base(spec: str, root: str | None) -> Path | None:
    """The folder a split file's relative image paths start from: the image folder of a standard dataset (as
    in CoOp's split files), the folder of ``folder:PATH``, the root (or CSV folder) of ``csv:PATH``."""
    kind, _, arg = spec.partition(":")
    if arg:
        if kind == "folder":
            return Path(arg).absolute()
        if kind == "csv":
            return Path(root or Path(arg).parent).absolute()
        return None  # the world's images are keys, not files
    from vlprompt.data.datasets import image_base

    return image_base(spec, root) if root is not None else None


def run_dataset(spec: str, root: str | None, split_file: str | None) -> DatasetSplits:
    """The dataset of a run: ``spec`` read from ``root``, with the splits of ``split_file`` when one is given."""
    data = resolve_dataset(spec, root)
    return data if split_file is None else apply_split_file(data, split_file, split_base(spec, root))
