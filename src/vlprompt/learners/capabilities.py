"""What a learner offers and what a regularizer needs, so composition is computed, never listed.

A learner declares the capabilities it offers (possibly depending on its options); a regularizer
declares the ones it requires (possibly depending on its options). A pair composes exactly when
nothing required is missing, and a refusal names what is missing. No module names another method.
"""

from __future__ import annotations

from enum import Enum

from vlprompt.errors import ConfigError


class Capability(str, Enum):
    """A property of a learner that other parts of the library may rely on."""

    LEARNED_PROMPTS = "learned_prompts"
    LEARNED_TEXT = "learned_text_prompts"
    CONTEXT = "context_vectors"
    PER_IMAGE_CONTEXT = "per_image_context"
    DEEP_PROMPTS = "deep_prompts"
    PROMPTED_IMAGE_TOWER = "prompted_image_tower"
    TUNED_IMAGE_TOWER = "tuned_image_tower"
    FIXED_IMAGE_FEATURES = "fixed_image_features"
    ENCODE_CONTEXT = "encode_context"
    CLASS_CLASSIFIER = "class_classifier"
    NEW_CLASSES = "transfers_to_new_classes"
    CLASS_PROTOTYPES = "class_prototypes"
    CACHE_MODEL = "cache_model"
    VALIDATION_SEARCH = "validation_search"
    IMAGE_TOKENS = "image_tokens"
    SPLIT_AWARE = "split_aware_inference"
    REPRESENTATION_LOGITS = "representation_logits"

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self]


DESCRIPTIONS = {
    Capability.LEARNED_PROMPTS: "the learner has trained prompt tensors",
    Capability.LEARNED_TEXT: "the class text features depend on trained prompt tensors",
    Capability.CONTEXT: "a context tensor `ctx` of prompt vectors, (M, W), or (K, M, W) for one context per class "
                        "or per prompt set, in the text input, that can be replaced for one forward pass",
    Capability.PER_IMAGE_CONTEXT: "the prompts are conditioned on each image",
    Capability.DEEP_PROMPTS: "prompts enter deeper transformer blocks, not only the input",
    Capability.PROMPTED_IMAGE_TOWER: "the prompts change the image tower, so image features are trained",
    Capability.TUNED_IMAGE_TOWER: "the learner trains updates of the image tower's own weights (low-rank updates of "
                                  "its attention), so image features are trained",
    Capability.FIXED_IMAGE_FEATURES: "the image features are the frozen backbone's (they can be cached)",
    Capability.ENCODE_CONTEXT: "encode_context(ctx) gives the class text features of any context tensor",
    Capability.CLASS_CLASSIFIER: "the logits are logit_scale * normalize(image feature) @ W.T with one (K, D) "
                                 "class matrix W for every image",
    Capability.NEW_CLASSES: "the learned prompts serve class lists other than the training classes",
    Capability.CLASS_PROTOTYPES: "the classifier is a trained (K, D) tensor `prototypes` that starts from the frozen "
                                 "model's class text features `zero_shot_prototypes`",
    Capability.CACHE_MODEL: "the classifier holds a cache of the training set's features and labels, built "
                            "before training",
    Capability.VALIDATION_SEARCH: "hyper-parameters are chosen on the validation split after training",
    Capability.IMAGE_TOKENS: "the classifier reads the image's region features beside the pooled one: its image "
                             "features, cached or not, are (1 + R, D) per image",
    Capability.SPLIT_AWARE: "scores base and new classes by different paths when told at test time which split an "
                            "image comes from (set_inference_split); evaluation reports both that and the "
                            "split-agnostic score",
    Capability.REPRESENTATION_LOGITS: "beside the class-token logits the output carries `representation_logits` "
                                      "and `class_token_logits` (B, K) in `extras`: MMRL's second image feature, "
                                      "from its representation tokens",
}


def missing_capabilities(required: frozenset[Capability], offered: frozenset[Capability]) -> list[Capability]:
    return sorted(required - offered, key=lambda c: c.value)


def require(what: str, required: frozenset[Capability], learner_name: str, offered: frozenset[Capability],
            why: str = "") -> None:
    """Refuse ``what`` for a learner lacking one of ``required``, naming each missing capability."""
    missing = missing_capabilities(required, offered)
    if missing:
        names = "; ".join(f"{c.value} ({c.description})" for c in missing)
        raise ConfigError(f"{what} cannot be used with learner {learner_name!r}: it needs {names}, which "
                          f"{learner_name!r} does not offer{why}. `vlprompt list methods` shows what composes")
