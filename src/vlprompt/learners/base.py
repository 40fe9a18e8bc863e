"""What every prompt learner is: trainable prompt state that turns into CLIP logits.

The trainer and the regularizers only use this interface: logits and features for a batch, the
learnable tensors by name, the class list, and the capabilities the learner offers (which decide
what composes with it, and whether image features can be cached instead of recomputed every step).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError
from vlprompt.learners.capabilities import Capability
from vlprompt.options import Options

if TYPE_CHECKING:
    from vlprompt.learners.prompts import ClassPromptTokens


@dataclass
class LearnerOutput:
    """Logits (B, K) plus the normalised features regularizers read."""

    logits: torch.Tensor
    image_features: torch.Tensor  # (B, D), normalised
    text_features: torch.Tensor  # (K, D) or (B, K, D) for per-image prompts, normalised
    #: further named outputs a capability promises (e.g. ``representation_logits``); empty for most learners
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    #: the towers' outputs that ``image_features`` and ``text_features`` normalise, where the learner exposes
    #: them (``PromptLearner.exposes_tower_outputs``; raw text is not recomputed under a fixed classifier):
    #: what a head that reads unnormalised features takes (DePT's); None otherwise
    raw_image_features: torch.Tensor | None = None
    raw_text_features: torch.Tensor | None = None


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's logits s * <f, t>: the one place they are computed.

    ``image_features`` (B, D) and ``text_features`` (K, D), or (B, K, D) for per-image prompts, are
    both L2-normalised. Logits are fp32 whatever the towers' precision (the losses read them).
    """
    image_features, text_features = image_features.float(), text_features.float()
    if text_features.dim() == 3:
        return logit_scale * torch.einsum("bd,bkd->bk", image_features, text_features)
    return logit_scale * image_features @ text_features.t()


def class_order(trained: list[str], classnames: list[str], learner: str) -> torch.Tensor:
    """Row indices that put a classifier learned for ``trained`` in the order of ``classnames``: the same
    classes in any order are served, others are refused (such a learner holds one row per trained class)."""
    if sorted(classnames) != sorted(trained) or len(set(classnames)) != len(classnames):
        unknown = sorted(set(classnames) - set(trained))
        raise ConfigError(f"{learner} scores only the {len(trained)} classes it was trained on"
                          + (f"; it has nothing for {', '.join(map(repr, unknown[:5]))}" if unknown else ""))
    return torch.tensor([trained.index(c) for c in classnames])


def check_training_labels(learner: str, labels: torch.Tensor, classes: int) -> None:
    """A learner fitted to the training set needs samples of every class it was built for."""
    if sorted(set(labels.tolist())) != list(range(classes)):
        raise ConfigError(f"{learner}: the training labels must cover the {classes} classes the learner was built for")


@dataclass
class NoOptions(Options):
    """A learner or regularizer without options."""


def make_options(cls: type[Options], config: Options | None, options: dict) -> Options:
    """The typed options of a method from either a ready ``config`` or keyword options (not both)."""
    if config is None:
        return cls.from_mapping(options)
    if options:
        raise ConfigError(f"{cls.owner}: pass either a config object or keyword options, not both")
    if not isinstance(config, cls):
        raise ConfigError(f"{cls.owner} takes a {cls.__name__}, got a {type(config).__name__}")
    return config


class PromptLearner(nn.Module):
    """Base class: subclasses set ``name``, ``Config``, ``capabilities`` and implement
    ``set_classnames`` and ``text_features``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[Options]] = NoOptions
    #: what this learner offers; ``capabilities_of`` may refine it from the options
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init_subclass__(cls, **kwargs):
        """Every learner ends its construction on its backbone's device, whatever its own ``__init__``
        created where (random initial prompts are drawn on the CPU, for the same values everywhere)."""
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kw):
            init(self, *args, **kw)
            if type(self).__init__ is __init__:  # the outermost constructor moves once
                self.to(self.backbone.device)

        cls.__init__ = __init__

    def __init__(self, backbone: Backbone, classnames: list[str], config: Options | None = None, **options):
        super().__init__()
        self.config = make_options(self.Config, config, options)
        self.backbone = backbone
        self.classnames = list(classnames)
        #: classes per checkpointed chunk where class prompts are encoded one sequence each (an execution
        #: choice like the shared prefix: same numbers, less memory; set from train.text_chunk)
        self.text_chunk: int | None = None
        #: the fixed token embeddings of the class prompts, for a learner that encodes class prompts of its own
        #: (``ClassPromptTokens``, set where it builds its prompts); None for one that does not (a probe, an adapter)
        self.tokens: ClassPromptTokens | None = None
        self._fixed_text: torch.Tensor | None = None  # set only inside ``fixed_classifier``
        #: a plug-in head (``learners/heads.py``) that adjusts the logits, attached by its method; None without
        self.head: nn.Module | None = None
        #: the split the evaluation told this classifier ("base"/"new"), None when not told (and in training)
        self.inference_split: str | None = None

    def class_prompt_shape(self) -> tuple[int, int] | None:
        """(classes, tokens per class up to the longest prompt's end) of the class prompts this learner encodes,
        the activation size that ``train.text_chunk`` budgets; None when it encodes no class prompts."""
        if self.tokens is None:
            return None
        return len(self.tokens), int(self.tokens.eot.max()) + 1

    @classmethod
    def capabilities_of(cls, config: Options) -> frozenset[Capability]:
        """The capabilities of a learner built with ``config`` (before any backbone loads)."""
        return cls.capabilities

    @property
    def offers(self) -> frozenset[Capability]:
        """What this learner offers: its own capabilities, and those of an attached head."""
        own = self.capabilities_of(self.config)
        return own | self.head.capabilities if self.head is not None else own

    @property
    def uses_image_tower(self) -> bool:
        """True when the learner changes the image features, by prompts or by updates of the tower's
        weights (no feature cache: images go through the tower at every step)."""
        return bool({Capability.PROMPTED_IMAGE_TOWER, Capability.TUNED_IMAGE_TOWER} & self.offers)

    @property
    def uses_image_tokens(self) -> bool:
        """True when the image features are (1 + R, D) per image: the pooled one, then the regions'."""
        return Capability.IMAGE_TOKENS in self.offers

    @property
    def image_conditioned(self) -> bool:
        """True when the text features depend on the image (per-image prompts)."""
        return Capability.PER_IMAGE_CONTEXT in self.offers

    # -- interface -------------------------------------------------------------------------
    def options(self) -> dict:
        """The options that rebuild this learner (saved in artifacts)."""
        return self.config.to_dict()

    def set_classnames(self, classnames: list[str]) -> None:
        """Rebuild everything that depends on the class list (learned tensors are kept)."""
        raise NotImplementedError

    def text_features(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised class text features (K, D); per-image learners return (B, K, D). A learner overrides
        this or, when its class features are the text tower's outputs normalised, ``class_text_outputs``."""
        raw = self.class_text_outputs(image_features)
        if raw is None:
            raise NotImplementedError(f"{type(self).__name__} defines neither text_features nor class_text_outputs")
        return F.normalize(raw, dim=-1)

    def class_text_outputs(self, image_features: torch.Tensor | None = None) -> torch.Tensor | None:
        """The text tower's outputs for the class prompts before normalisation, (K, D) or (B, K, D); None for
        a learner whose class features are something else (a probe's weights, averaged templates)."""
        return None

    @property
    def exposes_tower_outputs(self) -> bool:
        """Whether the features this learner scores are CLIP's normalisation of tower outputs it can hand
        out: the image tower's own (no adapter between) and ``class_text_outputs``. A head that reads
        unnormalised features (DePT) reads those then, otherwise the normalised ones."""
        cls = type(self)
        return (cls.adapt_image_features is PromptLearner.adapt_image_features
                and cls.class_text_outputs is not PromptLearner.class_text_outputs
                and cls.text_features is PromptLearner.text_features)

    def fitted_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors computed from the training set rather than trained (a cache model's keys and labels,
        hyper-parameters chosen on validation data): saved in artifacts beside the learned ones."""
        return {}

    def build_from_training_set(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Learners with capability ``cache_model`` build their cache here, before training, from the
        cached training features (views, N, D) and labels (N,)."""

    def select_on_validation(self, features: torch.Tensor, labels: torch.Tensor) -> dict:
        """Learners with capability ``validation_search`` choose their hyper-parameters on the validation
        features (N, D) after training; returns the chosen values, which results.json records."""
        return {}

    def set_inference_split(self, split: str | None) -> None:
        """Choose the scoring path for the images that follow: "base" or "new" when the evaluation tells the
        learner which split its test images come from, None for the split-agnostic path used when it is
        not told. Learners with capability ``split_aware_inference`` switch paths (and document which one
        None takes); every other learner scores all classes through one path, so this does nothing.
        Evaluation calls it on a ``for_classes`` view only, never on the trained learner."""
        if split not in (None, "base", "new"):
            raise ValueError(f"inference split must be 'base', 'new' or None, got {split!r}")
        self.inference_split = split  # read only by an attached head (and by learners that override this)

    def attach_head(self, head: nn.Module) -> None:
        """Attach a plug-in head (``learners/heads.py``): its tensors become learned tensors of this learner
        (trained, checkpointed, saved in its artifact) and it adjusts the logits of ``forward``."""
        if self.head is not None:
            raise ConfigError(f"learner {self.name!r} already has a {self.head.name} head; a learner takes one head")
        self.head = head.to(self.backbone.device)

    def lr_multipliers(self) -> dict[str, float]:
        """Learned tensors trained at a multiple of train.lr (after warm-up): an attached head's."""
        if self.head is None:
            return {}
        return {f"head.{n}": self.head.lr_multiplier for n, p in self.head.named_parameters() if p.requires_grad}

    def learnable_tensors(self) -> dict[str, nn.Parameter]:
        """Trained tensors by name: what is saved, optimised and seen by regularizers."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("backbone.")}

    # -- shared behaviour ------------------------------------------------------------------
    def follow_class_order(self, classnames: list[str], what: str) -> None:
        """For learners holding one row per trained class: the first call fixes ``trained_classes``; every
        call sets the ``order`` buffer that maps ``classnames`` onto them (other classes are refused)."""
        trained = self.__dict__.setdefault("trained_classes", list(classnames))
        order = class_order(trained, classnames, what).to(self.backbone.device)
        self.register_buffer("order", order, persistent=False)  # moves with the learner
        self.classnames = list(classnames)

    def for_classes(self, classnames: list[str]) -> PromptLearner:
        """This learner as a classifier of another class list, leaving this one untouched.

        The view shares every learned tensor (and any parametrization on it) and holds its own
        class-dependent buffers, so evaluation on base, new or another dataset's classes never
        mutates the trained learner.
        """
        view = object.__new__(type(self))  # not copy.copy: parametrized modules (QPrompt) refuse to pickle
        view.__dict__.update(self.__dict__)
        view._parameters = dict(self._parameters)
        view._buffers = dict(self._buffers)
        view._modules = dict(self._modules)
        view._fixed_text = None
        view.set_classnames(classnames)
        return view

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower's output for ``images``, unnormalised: what a feature cache holds for
        learners that leave the tower frozen (learners that prompt the tower override this)."""
        return self.backbone.encode_image(images)

    def adapt_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """The normalised image features the class scores use, from the tower's output: CLIP's
        normalisation; a learner that transforms the frozen features (an adapter) overrides this."""
        return F.normalize(features, dim=-1)

    @contextmanager
    def fixed_classifier(self, text_features: torch.Tensor | None = None):
        """Inside this block every forward reuses one set of class text features: computed once here
        (evaluation, predict, export) or the given ones (a corrupted context's). Learners whose text
        features depend on the image compute them per batch as usual."""
        if text_features is None and not self.image_conditioned:
            text_features = self.text_features()
        previous, self._fixed_text = self._fixed_text, text_features
        try:
            yield self
        finally:
            self._fixed_text = previous

    def scores(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Class scores from the normalised image and class text features: CLIP's logits; a learner that
        adds to them (a cache model) overrides this."""
        return clip_logits(image_features, text_features, self.backbone.logit_scale)

    def forward(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None) -> LearnerOutput:
        """Logits for a batch given either images or the image tower's (unnormalised) features: the one
        path from images to class scores that training, evaluation, predict and export share."""
        if features is None:
            if images is None:
                raise ValueError("pass images or features")
            features = self.encode_images(images)
        image_features = self.adapt_image_features(features)
        exposed = self.exposes_tower_outputs
        raw_image, raw_text = (features if exposed else None), None
        if self._fixed_text is not None:
            text = self._fixed_text
        elif exposed:
            raw_text = self.class_text_outputs(image_features)
            text = F.normalize(raw_text, dim=-1)
        else:
            text = self.text_features(image_features)
        logits = self.scores(image_features, text)
        if self.head is not None:  # reads the pooled feature of a learner with region tokens
            head_input = raw_image if raw_image is not None else image_features
            pooled = head_input[:, 0] if self.uses_image_tokens else head_input
            logits = self.head.adjust(logits, pooled, self.classnames, self.inference_split)
        return LearnerOutput(logits=logits, image_features=image_features, text_features=text,
                             raw_image_features=raw_image, raw_text_features=raw_text)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.train(False)
        return self
