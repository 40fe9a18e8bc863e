"""Hand-crafted prompt templates per dataset (methods.md §1.6).

"coop": the single template of zero-shot CLIP / CoOp; "ensemble": CoOp's seven ImageNet templates
plus the dataset's own (ImageNet itself: the seven only; the variants do add theirs), whose
normalised text features are averaged and re-normalised (``learners.zeroshot``); "prograd":
ProGrad's teacher templates; "kgcoop": KgCoOp's (CoOp's, except DTD); "promptsrc": the 60 ImageNet
templates of PromptSRC's teacher, for every dataset.
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
#: PromptSRC's teacher (methods.md §6, §1.6): 60 of the 80 ImageNet templates of CLIP's
#: prompt-engineering notebook, in the order of PromptSRC's ``trainers/imagenet_templates.py``
PROMPTSRC = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.",
    "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.",
    "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.",
)
KINDS = ("coop", "ensemble", "prograd", "kgcoop", "promptsrc")


def templates_for(dataset: str, kind: str = "coop", default: str = "a photo of a {}.") -> list[str]:
    """Templates of ``kind`` for a standard dataset name; other datasets get ``default`` as their own."""
    check_choice("template kind", kind, KINDS)
    own = COOP.get(dataset, default)
    if kind == "promptsrc":
        return list(PROMPTSRC)
    if kind == "ensemble":
        return list(IMAGENET_TEMPLATES_SELECT) + ([] if dataset == "imagenet" else [own])
    table = {"coop": COOP, "prograd": PROGRAD, "kgcoop": KGCOOP}[kind]
    return [table.get(dataset, default)]
