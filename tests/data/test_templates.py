"""Hand-crafted templates per dataset and kind, against the tables of methods.md §1.6."""

from __future__ import annotations

import pytest

from vlprompt.data.datasets import DATASETS
from vlprompt.data.templates import templates_for
from vlprompt.errors import ConfigError

# §1.6, written out again here: CoOp / ZS-CLIP's single template per dataset
COOP_TABLE = {
    "oxford_pets": "a photo of a {}, a type of pet.", "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.", "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.", "stanford_cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.", "sun397": "a photo of a {}.", "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.", "imagenet": "a photo of a {}.", "imagenetv2": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.", "imagenet_a": "a photo of a {}.", "imagenet_r": "a photo of a {}.",
}
SELECT = ["itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
          "a {} in a video game.", "art of the {}.", "a photo of the small {}."]
PROGRAD_CHANGES = {"oxford_pets": "a type of pet, a photo of a {}.",
                   "oxford_flowers": "a type of flower, a photo of a {}.",
                   "fgvc_aircraft": "a type of aircraft, a photo of a {}.", "dtd": "a texture of {}.",
                   "food101": "a type of food, a photo of {}."}


@pytest.mark.parametrize("name", sorted(COOP_TABLE))
def test_templates_of_each_standard_dataset(name):
    assert name in DATASETS
    assert templates_for(name) == templates_for(name, "coop") == [COOP_TABLE[name]]
    # ensembling: the seven ImageNet templates, plus the dataset's own except for ImageNet itself
    assert templates_for(name, "ensemble") == SELECT + ([] if name == "imagenet" else [COOP_TABLE[name]])
    assert templates_for(name, "prograd") == [PROGRAD_CHANGES.get(name, COOP_TABLE[name])]
    kgcoop = "a photo of a {}, a type of texture." if name == "dtd" else COOP_TABLE[name]
    assert templates_for(name, "kgcoop") == [kgcoop]


def test_other_datasets_use_their_own_template():
    assert templates_for("my_birds", "coop", "a photo of a {}, a bird.") == ["a photo of a {}, a bird."]
    assert templates_for("my_birds", "ensemble", "a photo of a {}, a bird.") == SELECT + ["a photo of a {}, a bird."]
    assert templates_for("my_birds", "kgcoop") == ["a photo of a {}."]
    with pytest.raises(ConfigError, match="'ensemble'"):
        templates_for("dtd", "average")


def test_promptsrc_teacher_templates_are_its_60_imagenet_templates_for_every_dataset():
    from vlprompt.data.templates import templates_for

    for dataset in ("imagenet", "dtd", "world:objects"):
        templates = templates_for(dataset, "promptsrc")
        assert len(templates) == len(set(templates)) == 60 and all(t.count("{}") == 1 for t in templates)
        assert (templates[0], templates[36], templates[-1]) == ("a photo of a {}.", "a {} in a video game.",
                                                                "itap of the {}.")
