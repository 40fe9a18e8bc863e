"""Learners by name, so configs and the command line can refer to them.

A learner registers itself with ``@register_learner``; importing ``vlprompt.learners`` registers
the built-in ones.
"""

from __future__ import annotations

from vlprompt.backbones import Backbone
from vlprompt.learners.base import PromptLearner
from vlprompt.options import Options
from vlprompt.registry import Registry

LEARNERS: Registry[type[PromptLearner]] = Registry("learner")
register_learner = LEARNERS.register()


def list_learners() -> list[str]:
    return LEARNERS.names()


def learner_config(name: str, options: dict | Options | None = None) -> Options:
    """The typed options of learner ``name``, validated without a backbone."""
    cls = LEARNERS.get(name)
    return options if isinstance(options, cls.Config) else cls.Config.from_mapping(options)


def build_learner(name: str, backbone: Backbone, classnames: list[str], dataset_template: str | None = None,
                  **options) -> PromptLearner:
    """Build a learner; options that refer to the dataset (its hand-crafted template) are resolved
    with ``dataset_template`` by the learner's own options class."""
    config = learner_config(name, options).with_dataset_template(dataset_template)
    return LEARNERS.get(name)(backbone, classnames, config)
