"""The files each standard dataset is prepared from, with their addresses and published checksums.

Names, addresses and layouts follow CoOp's DATASETS.md (methods.md §1.5). A checksum is given only
where one is published, and ``checksum_source`` says where; where nobody publishes one it says so and
the file is checked by its content instead (a split file must parse as one). ``url`` is None where no
direct address exists (a sign-in, a Google-Drive page with a virus-scan warning, a dataset no longer
online): such a file must be fetched by hand and given with ``--from``. CoOp's small files on Google
Drive are tried through Drive's direct-download address, which serves files below its scan limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TORCHVISION = "torchvision 0.29.1, torchvision/datasets/{}.py"
NONE_PUBLISHED = "none published"


def drive(file_id: str) -> str:
    return f"https://drive.google.com/uc?export=download&id={file_id}"


def drive_page(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view"


@dataclass(frozen=True)
class Source:
    """One file a dataset is prepared from."""

    name: str  # its file name, as downloaded
    where: str  # where a person gets it
    url: str | None = None  # a direct address for --download
    checksum: str | None = None  # "md5:HEX" or "sha256:HEX"
    checksum_source: str = NONE_PUBLISHED
    kind: str = "archive"  # archive, split (CoOp's split_zhou JSON), json, classnames, file
    container: Source | None = None  # an archive that holds this file, tried when the file itself is absent
    member: str | None = None  # its path inside the container
    also_at: str | None = None  # a path under the data root that holds the same file (ImageNet's classnames.txt)
    optional: bool = False

    def content_problem(self, path: Path) -> str | None:
        """Why the file's content is not what its kind needs (an HTML error page saved under its name)."""
        if self.kind not in ("split", "json", "classnames"):
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return f"{path} cannot be read as text ({exc})"
        if self.kind == "classnames":
            lines = [line for line in text.splitlines() if line.strip()]
            if not lines or any(len(line.split()) < 2 or not line.startswith("n") for line in lines):
                return f"{path} is not a classnames.txt ('<wnid> <class name>' per line)"
            return None
        try:
            content = json.loads(text)
        except ValueError:
            return f"{path} is not JSON (a web page saved in its place?)"
        if self.kind == "split" and not (isinstance(content, dict) and {"train", "val", "test"} <= set(content)):
            return f"{path} is not a split_zhou file (a JSON object with train, val and test)"
        if self.kind == "json" and not isinstance(content, dict):
            return f"{path} is not a JSON object"
        return None


def split_source(file_name: str, file_id: str) -> Source:
    return Source(file_name, f"CoOp's DATASETS.md, Google Drive {drive_page(file_id)}", drive(file_id), kind="split",
                  checksum_source=NONE_PUBLISHED + " (CoOp publishes none; the file is checked as a split file)")


CLASSNAMES = Source("classnames.txt", f"CoOp's DATASETS.md (ImageNet), Google Drive "
                    f"{drive_page('1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF')}", drive("1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"),
                    kind="classnames", also_at="imagenet/classnames.txt")
VGG = "https://www.robots.ox.ac.uk/~vgg/data/"

CALTECH_ZIP = Source("caltech-101.zip", "https://data.caltech.edu/records/mzrjq-6wc02",
                     "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                     "md5:3138e1922a9193bfa496528edbbc45d0", TORCHVISION.format("caltech"))
SOURCES: dict[str, dict[str, Source]] = {
    "caltech101": {
        "images": Source("101_ObjectCategories.tar.gz", "inside caltech-101.zip from https://data.caltech.edu/records/"
                         "mzrjq-6wc02 (the address in DATASETS.md no longer serves it)",
                         checksum_source=NONE_PUBLISHED + " (torchvision checks the caltech-101.zip that holds it)",
                         container=CALTECH_ZIP, member="caltech-101/101_ObjectCategories.tar.gz"),
        "split": split_source("split_zhou_Caltech101.json", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
    },
    "oxford_pets": {
        "images": Source("images.tar.gz", VGG + "pets/", VGG + "pets/data/images.tar.gz",
                         "md5:5c4f3ee8e5d25df40f4fd59a7f44e54c", TORCHVISION.format("oxford_iiit_pet")),
        "annotations": Source("annotations.tar.gz", VGG + "pets/", VGG + "pets/data/annotations.tar.gz",
                              "md5:95a8c909bbe2e81eed6a22bccdf3f68f", TORCHVISION.format("oxford_iiit_pet")),
        "split": split_source("split_zhou_OxfordPets.json", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
    },
    "stanford_cars": {
        **{part: Source(f"{part}.tgz", "a copy of Stanford Cars (the Stanford site no longer serves it; torchvision "
                        "0.29.1 says so)", checksum_source=NONE_PUBLISHED + " (the dataset is no longer online)")
           for part in ("cars_train", "cars_test")},
        "devkit": Source("car_devkit.tgz", "a copy of Stanford Cars (no longer served by Stanford)",
                         checksum_source=NONE_PUBLISHED + " (the dataset is no longer online)"),
        "test_labels": Source("cars_test_annos_withlabels.mat", "a copy of Stanford Cars (no longer served by "
                              "Stanford)", kind="file", checksum_source=NONE_PUBLISHED + " (the dataset is no longer "
                              "online)"),
        "split": split_source("split_zhou_StanfordCars.json", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
    },
    "oxford_flowers": {
        "images": Source("102flowers.tgz", VGG + "flowers/102/", VGG + "flowers/102/102flowers.tgz",
                         "md5:52808999861908f626f3c1f4e79d11fa", TORCHVISION.format("flowers102")),
        "labels": Source("imagelabels.mat", VGG + "flowers/102/", VGG + "flowers/102/imagelabels.mat",
                         "md5:e0620be6f572b9609742df49c70aed4d", TORCHVISION.format("flowers102"), kind="file"),
        "names": Source("cat_to_name.json", "CoOp's DATASETS.md, Google Drive "
                        + drive_page("1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"), drive("1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"),
                        kind="json"),
        "split": split_source("split_zhou_OxfordFlowers.json", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
    },
    "food101": {
        "images": Source("food-101.tar.gz", "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
                         "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "md5:85eeb15f3717b99a5da872d97d918f87",
                         TORCHVISION.format("food101")),
        "split": split_source("split_zhou_Food101.json", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
    },
    "fgvc_aircraft": {
        "images": Source("fgvc-aircraft-2013b.tar.gz", VGG + "fgvc-aircraft/",
                         VGG + "fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                         checksum_source=NONE_PUBLISHED + " (torchvision downloads it unchecked)"),
    },
    "sun397": {
        "images": Source("SUN397.tar.gz", "https://vision.princeton.edu/projects/2010/SUN/",
                         "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
                         "md5:8ca2778205c41d23104230ba66911c7a", TORCHVISION.format("sun397")),
        "partitions": Source("Partitions.zip", "https://vision.princeton.edu/projects/2010/SUN/",
                             "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip", optional=True),
        "split": split_source("split_zhou_SUN397.json", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
    },
    "dtd": {
        "images": Source("dtd-r1.0.1.tar.gz", VGG + "dtd/", VGG + "dtd/download/dtd-r1.0.1.tar.gz",
                         "md5:fff73e5086ae6bdbea199a49dfb8a4c1", TORCHVISION.format("dtd")),
        "split": split_source("split_zhou_DescribableTextures.json", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
    },
    "eurosat": {
        "images": Source("EuroSAT.zip", "https://github.com/phelber/eurosat (RGB); the copy torchvision uses",
                         "https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                         "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
                         "md5:c8fa014336c82ac7804f0398fcb19387", TORCHVISION.format("eurosat")),
        "split": split_source("split_zhou_EuroSAT.json", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
    },
    "ucf101": {
        "images": Source("UCF-101-midframes.zip", "CoOp's DATASETS.md, Google Drive "
                         + drive_page("10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O") + " (too large for a direct download)"),
        "split": split_source("split_zhou_UCF101.json", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
    },
    "imagenet": {
        "train": Source("ILSVRC2012_img_train.tar", "https://image-net.org (after signing in)",
                        checksum="md5:1d675b47d978889d74fa0da5fadfb00e", checksum_source=TORCHVISION.format("imagenet")),
        "val": Source("ILSVRC2012_img_val.tar", "https://image-net.org (after signing in)",
                      checksum="md5:29b22e2961454d5413ddabcf34fc5622", checksum_source=TORCHVISION.format("imagenet")),
        "devkit": Source("ILSVRC2012_devkit_t12.tar.gz", "https://image-net.org (after signing in)",
                         checksum="md5:fa75699e90414af021442c21a62c3abf", checksum_source=TORCHVISION.format("imagenet")),
        "classnames": CLASSNAMES,
    },
    "imagenetv2": {
        "images": Source("imagenetv2-matched-frequency.tar.gz", "https://huggingface.co/datasets/vaishaal/ImageNetV2 "
                         "(linked from github.com/modestyachts/ImageNetV2)",
                         "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
                         "imagenetv2-matched-frequency.tar.gz"),
        "classnames": CLASSNAMES,
    },
    "imagenet_sketch": {
        "images": Source("ImageNet-Sketch.zip", "github.com/HaohanWang/ImageNet-Sketch (Google Drive, Kaggle or "
                         "Hugging Face)"),
        "classnames": CLASSNAMES,
    },
    "imagenet_a": {
        "images": Source("imagenet-a.tar", "github.com/hendrycks/natural-adv-examples",
                         "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar"),
        "classnames": CLASSNAMES,
    },
    "imagenet_r": {
        "images": Source("imagenet-r.tar", "github.com/hendrycks/imagenet-r",
                         "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"),
        "classnames": CLASSNAMES,
    },
}
