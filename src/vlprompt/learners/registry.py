"""Learners by name, so configs and the command line can refer to them."""

from __future__ import annotations

import inspect

from vlprompt.backbones import Backbone
from vlprompt.errors import ConfigError, check_choice
from vlprompt.learners.base import PromptLearner
from vlprompt.learners.cocoop import CoCoOp
from vlprompt.learners.coop import CoOp
from vlprompt.learners.maple import MaPLe
from vlprompt.learners.zeroshot import ZeroShotCLIP
from vlprompt.typecheck import check_types

LEARNERS: dict[str, type[PromptLearner]] = {cls.name: cls for cls in (ZeroShotCLIP, CoOp, CoCoOp, MaPLe)}


def learner_options(name: str) -> dict:
    """The options a learner accepts, with their defaults."""
    check_choice("learner", name, sorted(LEARNERS))
    params = list(inspect.signature(LEARNERS[name].__init__).parameters.values())[3:]
    return {p.name: p.default for p in params}


def build_learner(name: str, backbone: Backbone, classnames: list[str], dataset_template: str | None = None,
                  **options) -> PromptLearner:
    """Build a learner; one with a ``templates`` option left unset gets the dataset's template, and
    ``ctx_init_template="dataset"`` means the dataset's template (as ProGrad's configs do)."""
    valid = learner_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"learner {name!r} has no option {', '.join(unknown)}; valid options: {', '.join(valid) or '(none)'}"
        )
    check_types(name, LEARNERS[name].__init__, options)
    if "templates" in valid and options.get("templates") is None and dataset_template:
        options["templates"] = [dataset_template]
    if options.get("ctx_init_template") == "dataset":
        if not dataset_template:
            raise ConfigError(f"{name}.ctx_init_template=dataset needs a dataset with a hand-crafted template; "
                              "give the template itself, e.g. 'a photo of a {}.'")
        options["ctx_init_template"] = dataset_template
    return LEARNERS[name](backbone, classnames, **options)
