"""The reference's class-name processing (methods.md §1.5), recomputed from a split file's paths.

CoOp wrote each ``split_zhou_*.json`` by processing the raw folder or file names; the file then
carries the processed names. Recomputing them from the relative paths lets ``data verify`` tell a
split file that belongs to other images (another dataset, another version) from the right one.
Cars and Flowers take their names from annotation files, not paths, so they are not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

CALTECH_RENAMED = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
EUROSAT_RENAMED = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}


def _folder(relpath: str) -> str:
    return PurePosixPath(relpath).parts[0]


def caltech_name(relpath: str) -> str | None:
    """Four folders renamed to singular words; the two ignored folders have no class (None)."""
    folder = _folder(relpath)
    return None if folder in CALTECH_IGNORED else CALTECH_RENAMED.get(folder, folder)


def pets_name(relpath: str) -> str:
    """The breed is the file name without its trailing number, lower-cased: Abyssinian_12.jpg -> abyssinian."""
    return "_".join(PurePosixPath(relpath).stem.split("_")[:-1]).lower()


def sun397_name(relpath: str) -> str:
    """a/abbey/x.jpg -> "abbey"; b/bakery/shop/x.jpg -> "shop bakery" (the letter dropped, words reversed)."""
    return " ".join(reversed(PurePosixPath(relpath).parts[1:-1]))


def eurosat_name(relpath: str) -> str | None:
    return EUROSAT_RENAMED.get(_folder(relpath))


NAME_FROM_PATH: dict[str, Callable[[str], str | None]] = {
    "caltech101": caltech_name,
    "oxford_pets": pets_name,
    "food101": _folder,
    "sun397": sun397_name,
    "dtd": _folder,
    "eurosat": eurosat_name,
    "ucf101": _folder,  # the mid-frame folders already carry the split CamelCase name (Apply_Eye_Makeup)
}
