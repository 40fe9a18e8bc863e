"""``vlprompt data prepare``: lay out a standard dataset from its official files, as CoOp's DATASETS.md does.

Every file is found first (in ``--from``, under the data root for ImageNet's classnames.txt, inside a
container archive, or downloaded with ``--download``) and checked (published checksum, or content
for split files) before anything is unpacked; a missing file is named with where to get it.
Archives are unpacked under ``ROOT/.vlprompt-prepare/NAME/``, one complete folder per archive, so an
interrupted preparation resumes with the archives not yet unpacked. The dataset folder itself
appears in one rename, complete, or not at all; an existing folder of the user's is never replaced:
prepare only adds the single files it lacks (a split file, classnames.txt) or refuses.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vlprompt.data.archives import checksum_problem, unpack
from vlprompt.data.datasets import DATASETS, dataset_folder, expected_files
from vlprompt.data.download import download
from vlprompt.data.sources import SOURCES, Source
from vlprompt.errors import DataError
from vlprompt.io import atomic_dir, write_bytes
from vlprompt.progress import Progress

log = logging.getLogger(__name__)

STAGING = ".vlprompt-prepare"
DOWNLOADS = "downloads"  # under the data root, where --download puts files when --from is not given


@dataclass
class Context:
    """What one preparation has found and unpacked so far."""

    name: str
    staging: Path
    files: dict[str, Path]  # source key -> the located file
    drawn: set[Path] = field(default_factory=set)  # staged folders something was moved out of

    def source(self, key: str) -> Source:
        return SOURCES[self.name][key]

    def unpacked(self, key: str) -> Path:
        """The archive of ``key`` unpacked under the staging folder (reused when an earlier run finished it)."""
        return stage(self.staging / f"{self.source(key).name}.d", lambda tmp: unpack(self.files[key], tmp))


def stage(final: Path, fill: Callable[[Path], None]) -> Path:
    """``final`` filled by ``fill`` in a temporary sibling and renamed: complete, or absent and redone."""
    if final.is_dir():
        log.info("%s: unpacked by an earlier run, reused", final.name)
        return final
    tmp = final.with_name(f".{final.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # an interrupted earlier attempt, inside vlprompt's own staging folder
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, final)
    return final


def move_into(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        raise DataError(f"{dest.name} comes from two places while preparing {dest.parent}; the archives are not the "
                        "expected ones")
    os.replace(src, dest)


@dataclass(frozen=True)
class Unpack:
    """Unpack an archive and move folders of it into the dataset folder.

    ``moves``: path inside the archive (alternatives separated by ``|``; ``""`` its top level, or the one
    folder it holds) -> path in the dataset folder (``"."``: the dataset folder itself, its entries moved in).
    """

    key: str
    moves: dict[str, str]

    def stage(self, ctx: Context) -> None:
        if self.key in ctx.files:  # else an optional file that was not given
            ctx.unpacked(self.key)

    def place(self, ctx: Context, out: Path) -> None:
        if self.key not in ctx.files:
            return
        unpacked = ctx.unpacked(self.key)
        ctx.drawn.add(unpacked)
        for inner, dest in self.moves.items():
            src = self.find(ctx, unpacked, inner)
            if dest == ".":
                for entry in sorted(src.iterdir()):
                    move_into(entry, out / entry.name)
            else:
                move_into(src, out / dest)

    def find(self, ctx: Context, unpacked: Path, inner: str) -> Path:
        if inner == "":
            entries = [p for p in unpacked.iterdir() if not p.name.startswith(".")]
            return entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
        for candidate in inner.split("|"):
            if (unpacked / candidate).is_dir():
                return unpacked / candidate
        top = ", ".join(sorted(p.name for p in unpacked.iterdir())) or "nothing"
        raise DataError(f"{ctx.files[self.key]} holds no folder {inner.replace('|', ' or ')}/ (its top level holds: "
                        f"{top}); it is not the archive {ctx.name} is prepared from: get {ctx.source(self.key).name} "
                        f"from {ctx.source(self.key).where}")


@dataclass(frozen=True)
class Copy:
    """Copy a single file into the dataset folder."""

    key: str
    dest: str

    def stage(self, ctx: Context) -> None:
        pass

    def place(self, ctx: Context, out: Path) -> None:
        if self.key in ctx.files:
            shutil.copyfile(ctx.files[self.key], out / self.dest)


@dataclass(frozen=True)
class ImageNetTrain:
    """ILSVRC2012_img_train.tar holds one tar per class (n01440764.tar, ...): each becomes images/train/<wnid>/."""

    def stage(self, ctx: Context) -> None:
        tars = ctx.unpacked("train")
        classes = ctx.staging / "train"
        classes.mkdir(exist_ok=True)
        inner = sorted(tars.glob("*.tar"))
        if not inner and not any(classes.iterdir()):
            raise DataError(f"{ctx.files['train']} holds no per-class .tar files; it is not ILSVRC2012_img_train.tar")
        for tar in Progress(inner, "unpack ImageNet train classes", unit="class"):
            stage(classes / tar.stem, lambda tmp, tar=tar: unpack(tar, tmp))
            tar.unlink()  # unpacked: the staging copy is no longer needed (and is large)

    def place(self, ctx: Context, out: Path) -> None:
        ctx.drawn.add(ctx.staging / "train")
        move_into(ctx.staging / "train", out / "images" / "train")


@dataclass(frozen=True)
class ImageNetVal:
    """ILSVRC2012_img_val.tar is flat; the devkit's meta.mat and ground truth give each image's wnid."""

    def stage(self, ctx: Context) -> None:
        ctx.unpacked("devkit")
        ctx.unpacked("val")

    def place(self, ctx: Context, out: Path) -> None:
        wnids = validation_wnids(ctx.unpacked("devkit"), ctx.files["devkit"])
        images = ctx.unpacked("val")
        ctx.drawn.add(images)
        files = sorted(p for p in images.iterdir() if p.is_file())
        if len(files) != len(wnids):
            raise DataError(f"{ctx.files['val']} holds {len(files)} images and the devkit's ground truth lists "
                            f"{len(wnids)}; use ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz of ILSVRC2012")
        val = out / "images" / "val"
        for wnid in sorted(set(wnids)):
            (val / wnid).mkdir(parents=True)
        for path, wnid in zip(files, wnids):
            os.replace(path, val / wnid / path.name)


def validation_wnids(devkit: Path, archive: Path) -> list[str]:
    """The wnid of each validation image in file-name order, from the devkit's meta.mat and ground truth."""
    from scipy.io import loadmat

    data = devkit / "ILSVRC2012_devkit_t12" / "data"
    try:
        synsets = loadmat(data / "meta.mat", squeeze_me=True)["synsets"]
        wnid_of = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
        ids = [int(line) for line in (data / "ILSVRC2012_validation_ground_truth.txt").read_text().split()]
        return [wnid_of[i] for i in ids]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{archive} does not hold the ILSVRC2012 devkit's data/meta.mat and "
                        f"data/ILSVRC2012_validation_ground_truth.txt ({exc}); get ILSVRC2012_devkit_t12.tar.gz "
                        "from image-net.org") from exc


def flowers_labels_agree(files: dict[str, Path]) -> None:
    """The split file's labels are imagelabels.mat's (1-based, image_00001.jpg first) minus one."""
    from scipy.io import loadmat

    try:
        labels = loadmat(files["labels"])["labels"].ravel()
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{files['labels']} is not Oxford Flowers' imagelabels.mat ({exc}); get it from "
                        f"{SOURCES['oxford_flowers']['labels'].where}") from exc
    split = json.loads(files["split"].read_text())
    for part in ("train", "val", "test"):
        for relpath, label, classname in split[part]:
            index = int("".join(c for c in Path(relpath).stem if c.isdigit()))
            if not 1 <= index <= len(labels) or int(labels[index - 1]) - 1 != int(label):
                expected = int(labels[index - 1]) - 1 if 1 <= index <= len(labels) else "no label"
                raise DataError(f"{files['split']} gives {relpath} label {label} ({classname!r}) and "
                                f"{files['labels']} gives {expected}: the two files do not belong together; get both "
                                "again")


def _same(folder: str) -> dict[str, str]:
    return {folder: folder}


STEPS = {
    "caltech101": [Unpack("images", _same("101_ObjectCategories")), Copy("split", "split_zhou_Caltech101.json")],
    "oxford_pets": [Unpack("images", _same("images")), Unpack("annotations", _same("annotations")),
                    Copy("split", "split_zhou_OxfordPets.json")],
    "stanford_cars": [Unpack("cars_train", _same("cars_train")), Unpack("cars_test", _same("cars_test")),
                      Unpack("devkit", _same("devkit")), Copy("test_labels", "cars_test_annos_withlabels.mat"),
                      Copy("split", "split_zhou_StanfordCars.json")],
    "oxford_flowers": [Unpack("images", _same("jpg")), Copy("labels", "imagelabels.mat"),
                       Copy("names", "cat_to_name.json"), Copy("split", "split_zhou_OxfordFlowers.json")],
    "food101": [Unpack("images", {"food-101": "."}), Copy("split", "split_zhou_Food101.json")],
    "fgvc_aircraft": [Unpack("images", {"fgvc-aircraft-2013b/data": "."})],
    "sun397": [Unpack("images", _same("SUN397")), Unpack("partitions", {"": "."}),
               Copy("split", "split_zhou_SUN397.json")],
    "dtd": [Unpack("images", {"dtd": "."}), Copy("split", "split_zhou_DescribableTextures.json")],
    "eurosat": [Unpack("images", _same("2750")), Copy("split", "split_zhou_EuroSAT.json")],
    "ucf101": [Unpack("images", _same("UCF-101-midframes")), Copy("split", "split_zhou_UCF101.json")],
    "imagenet": [ImageNetTrain(), ImageNetVal(), Copy("classnames", "classnames.txt")],
    "imagenetv2": [Unpack("images", _same("imagenetv2-matched-frequency-format-val")),
                   Copy("classnames", "classnames.txt")],
    "imagenet_sketch": [Unpack("images", {"sketch|images": "images"}), Copy("classnames", "classnames.txt")],
    "imagenet_a": [Unpack("images", _same("imagenet-a")), Copy("classnames", "classnames.txt")],
    "imagenet_r": [Unpack("images", _same("imagenet-r")), Copy("classnames", "classnames.txt")],
}
CONSISTENCY = {"oxford_flowers": flowers_labels_agree}


def can_download(source: Source) -> bool:
    return source.url is not None or (source.container is not None and can_download(source.container))


def fix_commands(name: str, root: str | Path) -> list[str]:
    """The ``data prepare`` lines that create ``name`` under ``root``: from downloaded files, and online where
    every file has a direct address."""
    needed = [s for s in SOURCES[name].values() if not s.optional]
    files = ", ".join(s.name if s.container is None else f"{s.name} (or {s.container.name})" for s in needed)
    lines = [f"vlprompt data prepare {name} --root {root} --from DIR   (DIR holding {files})"]
    if all(can_download(s) or s.also_at for s in needed):
        lines.append(f"vlprompt data prepare {name} --root {root} --download")
    return lines


class Finder:
    """Finds each source file: in ``from_dir``, under the data root, inside its container, or by download."""

    def __init__(self, root: Path, from_dir: Path | None, download_dir: Path | None, staging: Path):
        self.root, self.from_dir, self.download_dir, self.staging = root, from_dir, download_dir, staging

    def present(self, source: Source) -> Path | None:
        if self.from_dir is not None and (self.from_dir / source.name).is_file():
            return self.from_dir / source.name
        if source.also_at and (self.root / source.also_at).is_file():
            return self.root / source.also_at
        if self.download_dir is not None and (self.download_dir / source.name).is_file():
            return self.download_dir / source.name
        return None

    def obtainable(self, source: Source) -> bool:
        return (self.present(source) is not None or (self.download_dir is not None and source.url is not None)
                or (source.container is not None and self.obtainable(source.container)))

    def get(self, source: Source) -> Path:
        """The file, downloading it or taking it out of its container when needed; checked."""
        path = self.present(source)
        if path is None and source.container is not None and self.obtainable(source.container):
            container = self.get(source.container)
            path = stage(self.staging / f"{source.container.name}.d",
                         lambda tmp: unpack_member(container, source.member, tmp))
            path = path / Path(source.member).name
        elif path is None:
            path = download(source.url, self.download_dir / source.name, source.checksum, source.checksum_source)
        elif not (self.staging / f"{source.name}.d").is_dir():  # else checked before an earlier run unpacked it
            problem = checksum_problem(path, source.checksum)
            if problem:
                raise DataError(f"{problem} (checksum from {source.checksum_source}): it is not the published "
                                f"{source.name}, or it is damaged; get it again from {source.where}")
        problem = source.content_problem(path)
        if problem:
            raise DataError(f"{problem}; get {source.name} again from {source.where}")
        return path


def unpack_member(container: Path, member: str, dest: Path) -> None:
    """Unpack ``container`` into ``dest`` and keep only ``member`` (moved to ``dest``)."""
    everything = dest / ".all"
    everything.mkdir()
    unpack(container, everything)
    if not (everything / member).is_file():
        raise DataError(f"{container} holds no {member}; it is not the expected archive")
    os.replace(everything / member, dest / Path(member).name)
    shutil.rmtree(everything)


def prepare_dataset(name: str, root: str | Path, from_dir: str | Path | None = None, download: bool = False) -> str:
    """Lay out ``name`` under ``root``; returns what was done. Refuses, before writing anything, when a file is
    missing or does not match its checksum, or when a folder of the user's would be replaced."""
    DATASETS.get(name)  # an unknown name is refused with the valid ones
    root = Path(root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder; give the folder that holds the dataset folders")
    if from_dir is not None and not Path(from_dir).is_dir():
        raise DataError(f"--from {from_dir} is not a folder; give the folder holding the downloaded files")
    if from_dir is None and not download:
        raise DataError(f"give --from DIR (the folder holding the downloaded files) or --download; {name} needs: "
                        + ", ".join(s.name for s in SOURCES[name].values() if not s.optional))
    folder = root / dataset_folder(name)
    staging = root / STAGING / name
    finder = Finder(root, Path(from_dir).absolute() if from_dir else None,
                    (Path(from_dir).absolute() if from_dir else root / DOWNLOADS) if download else None, staging)
    sources = SOURCES[name]
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} is a file where the {name} folder goes; move it aside and run the command again")
    if folder.exists() and any(folder.iterdir()):
        return _complete_existing(name, root, folder, finder)
    keys = [k for k, s in sources.items() if not s.optional or finder.obtainable(s)]
    _refuse_missing(name, root, [sources[k] for k in keys], finder)
    try:
        files = {k: finder.get(sources[k]) for k in keys}
        if name in CONSISTENCY:
            CONSISTENCY[name](files)
        ctx = Context(name, staging, files)
        for step in STEPS[name]:  # every archive unpacked (or found unpacked by an earlier run) before anything moves
            step.stage(ctx)
        try:
            with atomic_dir(folder, is_own=lambda p: False, what="dataset folder") as out:
                for step in STEPS[name]:
                    step.place(ctx, out)
        except BaseException:
            for drawn in ctx.drawn:  # partly moved out: unpack again next time
                shutil.rmtree(drawn, ignore_errors=True)
            raise
        shutil.rmtree(staging)
    finally:
        for empty in (staging, root / STAGING):  # what an earlier step left is kept for the next run
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
    return f"{name}: prepared in {folder}"


def _refuse_missing(name: str, root: Path, sources: list[Source], finder: Finder) -> None:
    missing = [s for s in sources if not finder.obtainable(s)]
    if not missing:
        return
    lines = [f"{name} cannot be prepared: these files are missing" + (f" from {finder.from_dir}" if finder.from_dir
                                                                        else "")]
    for s in missing:
        inside = f" (or {s.container.name}, which holds it)" if s.container is not None else ""
        how = "" if finder.download_dir is None or can_download(s) else "; it has no direct address to download from"
        lines.append(f"  {s.name}{inside}: get it from {s.where}{how}")
    lines.append("then run: " + fix_commands(name, root)[0])
    raise DataError("\n".join(lines))


def _complete_existing(name: str, root: Path, folder: Path, finder: Finder) -> str:
    """Add the single files a user's existing dataset folder lacks; refuse when more is missing."""
    missing = [path for path, _ in expected_files(name, root) if not path.exists()]
    if not missing:
        return f"{name}: {folder} is already prepared; nothing to do"
    copies = {folder / step.dest: step.key for step in STEPS[name] if isinstance(step, Copy)}
    not_copied = [p for p in missing if p not in copies]
    if not_copied:
        raise DataError(f"{folder} exists and lacks {', '.join(str(p) for p in not_copied)}; prepare never changes a "
                        "folder it did not create: move it aside (or remove it) and run the command again, or "
                        "unpack the missing part there yourself")
    sources = SOURCES[name]
    _refuse_missing(name, root, [sources[copies[p]] for p in missing], finder)
    for path in missing:
        write_bytes(path, finder.get(sources[copies[path]]).read_bytes())
    return f"{name}: added {', '.join(p.name for p in missing)} to {folder}"

