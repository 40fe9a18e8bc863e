"""The shared method matrices, generated from the registries (DESIGN.md principle 1).

A learner or regularizer enters the device, precision and composition checks by registering, never by
an edit of a list here: the tables below hold only option overrides that the tiny test towers or data
need, and a name in them that is not registered fails the suite (tests/core/test_extension.py).
The checks themselves live here too, so a test can run them on a method it registers itself.
"""

from __future__ import annotations

import torch

from vlprompt.backbones import load_backbone
from vlprompt.engine.batches import FeatureBatches
from vlprompt.engine.config import TrainConfig
from vlprompt.engine.trainer import Trainer
from vlprompt.errors import ConfigError
from vlprompt.learners.capabilities import Capability, missing_capabilities
from vlprompt.learners.registry import LEARNERS, build_learner
from vlprompt.regularizers.base import TrainContext
from vlprompt.regularizers.registry import REGULARIZERS, build_regularizer

TEMPLATE = "a photo of a {}."
#: the tiny towers have 4 layers, fewer than the papers' prompt depths and TCP's injection block (8)
LEARNER_OPTIONS = {"maple": {"prompt_depth": 3}, "ivlp": {"prompt_depth_text": 3, "prompt_depth_vision": 3},
                   "tcp": {"layer": 3}, "mmrl": {"first_block": 2},
                   # CLIP-LoRA's dropout makes training-mode logits random, and the matrices compare them with
                   # evaluation's and across precisions (its dropout: tests/learners/test_clip_lora.py)
                   "clip_lora": {"dropout": 0.0}}
#: train settings of the composition check where the default (lr 0.01, one warm-up epoch at 1e-5) cannot show
#: a term in its 4 steps: zslp's prototypes are raw text features (norm about 10 on the tiny towers), so a step
#: turns them a tenth as far as a prompt's, and the terms that pull them back start at zero (CLAP trains them
#: at 0.1 for 300 epochs); clip_lora's B starts at zero, so its features start exactly at the frozen model's,
#: where a term pulling them back (KgCoOp, DeKg) has no gradient until a step at the full rate has moved B
#: (CLIP-LoRA's own schedule has no warm-up)
COMPOSITION_TRAIN = {"zslp": {"lr": 1.0}, "clip_lora": {"lr": 1.0, "warmup_epochs": 0}}
#: options the composition check needs: a term with a gradient on any data, where the paper gives no default
COMPOSITION_OPTIONS = {
    "nemesis": {"beta": 1, "omega": 1.0},  # PUN (PAN: test_nemesis.py)
    "npt": {"lambda_lmc": 0.1, "lambda_mmi": 0.1},
    "qprompt": {"bits": 1, "kmeans_init": "kmeans++", "kmeans_iters": 5, "cac_interval": 1, "cac_kl_threshold": 0.0},
    # ProGrad changes a step only where the CE and teacher gradients conflict; with PLOT's near-uniform logits
    # on random features the default soft teacher never conflicts in 4 steps, a sharp one does
    "prograd": {"temperature": 0.2},
}
#: options the device check needs: the paths that create tensors of their own
DEVICE_OPTIONS = {
    "nemesis": {"beta": 0, "omega": 1.0},  # PAN: the pre-inference path with its own tensors
    "npt": {"lambda_lmc": 0.1, "lambda_mmi": 0.1, "lmc_form": "anchor", "align": True},
    "qprompt": {"bits": 2, "kmeans_init": "kmeans++", "kmeans_iters": 3, "cac_interval": 1, "cac_kl_threshold": 0.0},
}
OPTION_TABLES = {"learner": LEARNER_OPTIONS, "learner (composition train)": COMPOSITION_TRAIN,
                 "regularizer (composition)": COMPOSITION_OPTIONS,
                 "regularizer (device)": DEVICE_OPTIONS}


def stale_option_entries() -> list[str]:
    """Entries of the option tables that name no registered method (a renamed or removed one)."""
    return [f"{kind} {name!r}" for kind, table in OPTION_TABLES.items() for name in table
            if name not in (LEARNERS if kind.startswith("learner") else REGULARIZERS)]


def trained_learners() -> list[str]:
    """Every registered learner with tensors to train."""
    return [n for n in LEARNERS.names() if Capability.LEARNED_PROMPTS in LEARNERS.get(n).capabilities]


def all_pairs() -> list[tuple[str, str]]:
    return [(lname, rname) for lname in LEARNERS.names() for rname in REGULARIZERS.names()]


def composing_pairs(options: dict[str, dict]) -> list[tuple[str, str]]:
    """The (learner, regularizer) pairs that compose with the given regularizer options."""
    return [(lname, rname) for lname, rname in all_pairs() if not missing(lname, rname, options)]


def missing(lname: str, rname: str, options: dict[str, dict]) -> list[Capability]:
    rcls = REGULARIZERS.get(rname)
    lcls = LEARNERS.get(lname)
    config = rcls.Config.from_mapping(options.get(rname, {}))
    return missing_capabilities(rcls.requirements(config), lcls.capabilities_of(lcls.Config.from_mapping(
        LEARNER_OPTIONS.get(lname, {}))))


def build(name: str, backbone, classnames: list[str]):
    return build_learner(name, backbone, classnames, TEMPLATE, **LEARNER_OPTIONS.get(name, {}))


def with_cache(learner, batches):
    """A cache-model learner gets its cache from the training features before training, as in a run."""
    if Capability.CACHE_MODEL in learner.offers and getattr(batches, "features", None) is not None:
        learner.build_from_training_set(batches.features, batches.labels)
    return learner


def regularizer(name: str | None, options: dict[str, dict]) -> list:
    return [build_regularizer({"name": name, **options.get(name, {})})] if name else []


# -- device: every tensor a training step creates lives on the backbone's device ---------------------------
def steps_on_meta_default(trainer: Trainer, batches) -> None:
    """Training steps with the default device set to ``meta``: a tensor created without an explicit
    device becomes a meta tensor, and the first operation mixing it with real tensors raises."""
    for batch in batches.epoch(0):
        with torch.device("meta"):
            trainer._step(batch)
    with torch.device("meta"):
        for reg in trainer.regularizers:
            reg.on_epoch_end(trainer.context)


def check_device(lname: str, rname: str | None, backbone, classnames, make_batches) -> None:
    learner = build(lname, backbone, classnames)
    batches = make_batches(learner, backbone, classnames)
    with_cache(learner, batches)
    trainer = Trainer(learner, TrainConfig(epochs=1, batch_size=4, lr=0.01), regularizer(rname, DEVICE_OPTIONS),
                      TrainContext(learner=learner, dataset="tiny"))
    trainer.start(batches)
    steps_on_meta_default(trainer, batches)
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in trainer.params.values())


# -- precision: lower-precision towers and autocast keep fp32 learned tensors, close to fp32 training ----
PRECISION_CLASSES = ["red circle", "blue square", "green triangle", "yellow star"]


def _train_in_precision(backbone, lname, precision, images, labels, regs):
    torch.manual_seed(0)
    learner = build(lname, backbone, PRECISION_CLASSES)
    cached = None
    if not learner.uses_image_tower:
        with torch.no_grad():
            feats = learner.encode_images(images).float()  # what a feature cache holds for it
        cached = FeatureBatches(feats[None], labels, 4, seed=0)
        with_cache(learner, cached)
    trainer = Trainer(learner, TrainConfig(epochs=2, batch_size=4, lr=0.01, precision=precision),
                      [build_regularizer(r) for r in regs], TrainContext(learner=learner))
    trainer.start(cached)
    batches = [{"images": images, "labels": labels}] if cached is None else list(cached.epoch(0))
    for _ in range(3):
        for batch in batches:
            scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else 1.0
            losses, _ = trainer._step(dict(batch))
            assert all(torch.isfinite(v) for v in losses.values())
            if trainer.scaler.is_enabled():  # no step was skipped for an overflow
                assert trainer.scaler.get_scale() == scale
    return learner


def check_precision(lname: str, towers: str, autocast: str) -> None:
    """Train with kgcoop where it composes (a regularizer reading the text features in low precision)."""
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(4)
    regs = [{"name": "kgcoop"}] if not missing(lname, "kgcoop", {}) else []
    reference = _train_in_precision(load_backbone("vlprompt-tiny", "world"), lname, "fp32", images, labels, regs)
    low = _train_in_precision(load_backbone("vlprompt-tiny", "world", precision=towers), lname, autocast, images,
                              labels, regs)
    assert low.backbone.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[towers]
    assert low.learnable_tensors(), f"{lname} has no learned tensor to check"
    for name, tensor in low.learnable_tensors().items():
        assert tensor.dtype == torch.float32, name
        start = reference.learnable_tensors()[name]
        assert (tensor - start).abs().max() < 0.05 + 0.05 * start.abs().max(), name


# -- composition: a composing pair trains with its own term; any other is refused naming what is missing --
def _train_for_composition(lname, regs, backbone, classnames, batches):
    """The history and the trained learner's logits on the first batch (what the method predicts)."""
    torch.manual_seed(0)
    learner = with_cache(build(lname, backbone, classnames), batches)
    settings = {"epochs": 2, "batch_size": 4, "lr": 0.01, **COMPOSITION_TRAIN.get(lname, {})}
    trainer = Trainer(learner, TrainConfig(**settings), regs,
                      TrainContext(learner=learner, dataset="tiny"))
    history = trainer.fit(batches)
    probe = next(iter(batches.epoch(0)))
    with torch.no_grad():
        logits = learner.eval()(images=probe.get("images"), features=probe.get("features")).logits
    return history, logits


def check_composition(lname: str, rname: str, backbone, classnames, make_batches) -> None:
    absent = missing(lname, rname, COMPOSITION_OPTIONS)
    if absent:
        torch.manual_seed(0)
        learner = build(lname, backbone, classnames)
        rcls = REGULARIZERS.get(rname)
        try:
            Trainer(learner, TrainConfig(epochs=1), regularizer(rname, COMPOSITION_OPTIONS),
                    TrainContext(learner=learner))
        except ConfigError as err:
            message = str(err)
        else:
            raise AssertionError(f"{lname}+{rname} trained although it lacks {absent}")
        assert all(c.value in message for c in absent), message
        present = rcls.requirements(rcls.Config.from_mapping(COMPOSITION_OPTIONS.get(rname, {}))) - set(absent)
        assert all(c.value not in message for c in present), message  # only what is missing is named
        return
    batches = make_batches(build(lname, backbone, classnames), backbone, classnames)
    alone_history, alone_logits = _train_for_composition(lname, [], backbone, classnames, batches)
    history, logits = _train_for_composition(lname, regularizer(rname, COMPOSITION_OPTIONS), backbone, classnames,
                                             batches)
    own = sorted({key for record in history for key in record if rname in key})
    assert own, f"{rname} left no term in the history: {sorted(history[-1])}"
    assert all(rname not in key for record in alone_history for key in record)
    assert all(torch.isfinite(torch.tensor(record[key])) for record in history for key in own)
    assert (logits - alone_logits).abs().max() > 1e-4, f"{rname} did not change what {lname} predicts"


# -- a real device: two steps at a precision, whose files load on the CPU with the same tensors ------------
#: the precisions of the device check: towers stored and autocast in each (fp16 with the gradient scaler)
DEVICE_PRECISIONS = ("fp32", "fp16", "bf16")


class ImageTensorBatches:
    """Fixed batches of images held in memory, for learners that prompt the image tower (no file needed)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def epoch(self, epoch: int):
        for start in range(0, len(self.labels), self.batch_size):
            idx = torch.arange(start, start + self.batch_size)
            yield {"images": self.images[idx], "labels": self.labels[idx], "index": idx}


def two_batches(learner, backbone, classes: int):
    """Two seeded batches of four on the CPU (the trainer moves them): images for learners that prompt the
    image tower, else cached features."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(8) % classes
    if learner.uses_image_tower:
        return ImageTensorBatches(torch.rand(8, 3, backbone.image_size, backbone.image_size, generator=g), labels, 4)
    return FeatureBatches(torch.randn(1, 8, backbone.embed_dim, generator=g), labels, 4, seed=0)


def effective_tensors(learner) -> dict[str, torch.Tensor]:
    """The learned and fitted tensors as the learner uses them, under their plain names: a parametrized
    tensor (``owner.parametrizations.name.original``, QPrompt's) by its parametrized value."""
    out = {}
    for key, tensor in {**learner.learnable_tensors(), **learner.fitted_tensors()}.items():
        owner, found, rest = key.rpartition("parametrizations.")
        if not found:
            out[key] = tensor.detach()
            continue
        owner, attr = owner.rstrip("."), rest.removesuffix(".original")
        with torch.no_grad():
            out[f"{owner}.{attr}" if owner else attr] = getattr(learner.get_submodule(owner), attr).detach()
    return out


def check_on_device(lname: str, rname: str | None, backbone, precision: str, folder) -> dict:
    """Two training steps on ``backbone``'s device (towers at its precision, autocast at ``precision``); the
    learned tensors stay fp32 and finite there, and the prompt artifact and checkpoint written then load on
    the CPU with exactly those tensors. Returns the steps' losses."""
    from pathlib import Path

    from vlprompt.learners.artifact import from_pretrained, save_pretrained

    folder = Path(folder)
    torch.manual_seed(0)
    learner = build(lname, backbone, PRECISION_CLASSES)
    batches = two_batches(learner, backbone, len(PRECISION_CLASSES))
    with_cache(learner, batches)
    config = TrainConfig(epochs=1, batch_size=4, lr=0.01, precision=precision)
    trainer = Trainer(learner, config, regularizer(rname, DEVICE_OPTIONS), TrainContext(learner=learner, dataset="tiny"))
    trainer.start(batches)
    losses = []
    for batch in batches.epoch(0):
        step, _ = trainer._step(dict(batch))
        assert all(torch.isfinite(v) for v in step.values()), step
        losses.append({k: float(v) for k, v in step.items()})
    for reg in trainer.regularizers:
        reg.on_epoch_end(trainer.context)
    saved = effective_tensors(learner)
    for name, tensor in learner.learnable_tensors().items():
        assert tensor.device == backbone.device and tensor.dtype == torch.float32, (name, tensor.device, tensor.dtype)
        assert torch.isfinite(tensor).all(), name
    save_pretrained(learner, folder / "prompt")
    trainer.save_checkpoint(folder / "checkpoint.pt")

    loaded = from_pretrained(folder / "prompt")  # its backbone is built on the CPU
    assert loaded.backbone.device.type == "cpu"
    loaded_tensors = {**loaded.learnable_tensors(), **loaded.fitted_tensors()}
    for name, tensor in saved.items():
        assert torch.equal(loaded_tensors[name], tensor.detach().cpu()), f"artifact tensor {name} changed on loading"
    resumed = with_cache(build(lname, loaded.backbone, PRECISION_CLASSES), batches)
    cpu_trainer = Trainer(resumed, TrainConfig(epochs=1, batch_size=4, lr=0.01), regularizer(rname, DEVICE_OPTIONS),
                          TrainContext(learner=resumed, dataset="tiny"))
    cpu_trainer.load_checkpoint(folder / "checkpoint.pt")
    for name, tensor in learner.learnable_tensors().items():
        assert torch.equal(resumed.learnable_tensors()[name], tensor.detach().cpu()), f"checkpoint tensor {name} changed"
    return {"losses": losses}
