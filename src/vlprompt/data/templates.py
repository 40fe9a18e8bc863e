"""Hand-crafted prompt templates per dataset (methods.md §1.6).

"coop": the single template of zero-shot CLIP / CoOp; "ensemble": CoOp's seven ImageNet templates
plus the dataset's own (ImageNet itself: the seven only; the variants do add theirs), whose
normalised text features are averaged and re-normalised (``learners.zeroshot``); "prograd":
ProGrad's teacher templates; "kgcoop": KgCoOp's (CoOp's, except DTD).
"""

from __future__ import annotations

from vlprompt.errors import check_choice

COOP = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
    "imagenetv2": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}
IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
PROGRAD = {**COOP,
           "oxford_pets": "a type of pet, a photo of a {}.",
           "oxford_flowers": "a type of flower, a photo of a {}.",
           "fgvc_aircraft": "a type of aircraft, a photo of a {}.",
           "dtd": "a texture of {}.",
           "food101": "a type of food, a photo of {}."}
KGCOOP = {**COOP, "dtd": "a photo of a {}, a type of texture."}
KINDS = ("coop", "ensemble", "prograd", "kgcoop")


def templates_for(dataset: str, kind: str = "coop", default: str = "a photo of a {}.") -> list[str]:
    """Templates of ``kind`` for a standard dataset name; other datasets get ``default`` as their own."""
    check_choice("template kind", kind, KINDS)
    own = COOP.get(dataset, default)
    if kind == "ensemble":
        return list(IMAGENET_TEMPLATES_SELECT) + ([] if dataset == "imagenet" else [own])
    table = {"coop": COOP, "prograd": PROGRAD, "kgcoop": KGCOOP}[kind]
    return [table.get(dataset, default)]
