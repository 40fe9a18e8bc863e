"""Downstream classification tasks of the synthetic world, as ``DatasetSplits`` like real datasets.

Images are generated on demand from their record key ``world://TASK/SPLIT/INDEX?seed=S``, so nothing
is stored; ``export_image_folder`` writes a task out as an ordinary image folder. Image i of a split
belongs to class i mod K; its other attributes are drawn from a generator seeded by the key.

The objects task's classes are listed in a fixed shuffled order, so its base/new split (the first
ceil(K/2) labels, methods.md §1.4) puts every colour and every shape on both sides while the
colour-shape combinations of new classes are never trained on.

``objects_noisy_base`` is the world's base-to-new benchmark (issue 14): its base and new halves name
disjoint shapes (the new classes' shape words are never trained on, as a real dataset's unseen class
names), and the base classes were photographed by a noisy camera while the new classes are clean.
A prompt tuned on the base half learns that camera; the hand-crafted prompt is right for the new
half. So prompt tuning gains on base and loses on new, which is the trade-off the papers' methods
exist to soften (docs/results/world_base_to_new.md).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from PIL import Image

from vlprompt.data.records import DatasetSplits, ImageRecord
from vlprompt.errors import ConfigError, DataError
from vlprompt.io import atomic_dir
from vlprompt.world.captions import TEXTURE_WORDS
from vlprompt.world.generator import COLOURS, SHAPES, TEXTURES, random_scene, render, shift


@dataclass(frozen=True)
class TaskSpec:
    classnames: tuple[str, ...]
    template: str
    fixed: tuple[dict, ...]  # the scene attributes that define each class
    shift: str | None = None  # domain shift applied to the rendered image
    base: str | None = None  # the task whose classes a shifted task shares
    shift_base_only: bool = False  # the shift applies to the base half of the classes only

    def shifted(self, label: int) -> str | None:
        """The shift of class ``label``'s images."""
        if self.shift_base_only and label >= math.ceil(len(self.classnames) / 2):
            return None
        return self.shift


def _objects_classes() -> tuple[tuple[str, ...], tuple[dict, ...]]:
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    random.Random(2024).shuffle(pairs)
    return tuple(f"{c} {s}" for c, s in pairs), tuple({"colour": c, "shape": s, "count": 1} for c, s in pairs)


def _split_shape_classes() -> tuple[tuple[str, ...], tuple[dict, ...]]:
    """Every colour with every other shape as the base half, the remaining shapes as the new half."""
    halves = []
    for shapes, seed in ((SHAPES[::2], 1), (SHAPES[1::2], 2)):
        pairs = [(c, s) for c in COLOURS for s in shapes]
        random.Random(seed).shuffle(pairs)
        halves += pairs
    return tuple(f"{c} {s}" for c, s in halves), tuple({"colour": c, "shape": s, "count": 1} for c, s in halves)


_OBJ_NAMES, _OBJ_FIXED = _objects_classes()
_SPLIT_NAMES, _SPLIT_FIXED = _split_shape_classes()
TASKS: dict[str, TaskSpec] = {
    "objects": TaskSpec(_OBJ_NAMES, "a photo of a {}.", _OBJ_FIXED),
    "shapes": TaskSpec(SHAPES, "a photo of a {}.", tuple({"shape": s, "count": 1} for s in SHAPES)),
    "colours": TaskSpec(tuple(COLOURS), "a photo of a {} shape.", tuple({"colour": c, "count": 1} for c in COLOURS)),
    "textures": TaskSpec(tuple(TEXTURE_WORDS[t] for t in TEXTURES), "a photo of a shape on a {} background.",
                         tuple({"texture": t} for t in TEXTURES)),
    "counts": TaskSpec(("one shape", "two shapes", "three shapes"), "a photo of {}.",
                       tuple({"count": n} for n in (1, 2, 3))),
    "objects_outline": TaskSpec(_OBJ_NAMES, "a photo of a {}.", tuple({**f, "filled": False} for f in _OBJ_FIXED),
                                base="objects"),
    "objects_noise": TaskSpec(_OBJ_NAMES, "a photo of a {}.", _OBJ_FIXED, shift="noise", base="objects"),
    "objects_blur": TaskSpec(_OBJ_NAMES, "a photo of a {}.", _OBJ_FIXED, shift="blur", base="objects"),
    "objects_colorshift": TaskSpec(_OBJ_NAMES, "a photo of a {}.", _OBJ_FIXED, shift="colorshift", base="objects"),
    "objects_noisy_base": TaskSpec(_SPLIT_NAMES, "a photo of a {}.", _SPLIT_FIXED, shift="noise", shift_base_only=True),
}
assert all(len(t.classnames) == len(t.fixed) for t in TASKS.values())

# 64 training images per class, so that 16-shot samples of different seeds are different images.
DEFAULT_SIZES = {"train": 64, "val": 4, "test": 10}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ConfigError(f"world task {name!r} does not exist; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def scene_of(task: str, split: str, index: int, seed: int):
    spec = task_spec(task)
    rng = random.Random(f"{task}/{split}/{index}/{seed}")
    return random_scene(rng, **spec.fixed[index % len(spec.classnames)])


def render_key(key: str) -> Image.Image:
    """Pixels of a record key ``world://TASK/SPLIT/INDEX?seed=S``."""
    url = urlparse(key)
    if url.scheme != "world":
        raise DataError(f"{key!r} is not a world image key")
    task = url.netloc
    split, index = url.path.strip("/").split("/")
    seed = int(parse_qs(url.query).get("seed", ["0"])[0])
    scene = scene_of(task, split, int(index), seed)
    image = render(scene)
    spec = task_spec(task)
    kind = spec.shifted(int(index) % len(spec.classnames))
    return shift(image, kind, scene.seed) if kind else image


def render_record(record: ImageRecord) -> Image.Image:
    """A world record's pixels (a module-level function, so DataLoader workers can receive it)."""
    return render_key(record.path)


def load_task(name: str, *, train_per_class: int = DEFAULT_SIZES["train"], val_per_class: int = DEFAULT_SIZES["val"],
              test_per_class: int = DEFAULT_SIZES["test"], seed: int = 0) -> DatasetSplits:
    """A world task with the given number of images per class in each split."""
    spec = task_spec(name)
    k = len(spec.classnames)
    splits = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class), ("test", test_per_class)):
        splits[split] = [ImageRecord(f"world://{name}/{split}/{i}?seed={seed}", i % k, spec.classnames[i % k])
                         for i in range(per_class * k)]
    return DatasetSplits(name=f"world:{name}", classnames=list(spec.classnames), template=spec.template,
                         image_loader=render_record, **splits)


def export_image_folder(data: DatasetSplits, out_dir: str | Path) -> Path:
    """Write every split as ``OUT/SPLIT/CLASS/INDEX.png`` (readable by ``folder:OUT``).

    The folder is built beside ``OUT`` and renamed into place, so it is complete or absent."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"{out_dir} already exists; choose another --out or remove it first")
    with atomic_dir(out_dir, lambda d: False, "image folder") as partial:  # complete or absent, with the umask
        for split in ("train", "val", "test"):
            for i, record in enumerate(data.split(split)):
                folder = partial / split / record.classname
                folder.mkdir(parents=True, exist_ok=True)
                data.load_image(record).save(folder / f"{i:05d}.png")
    return out_dir
