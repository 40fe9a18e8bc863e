"""Prompt learners: the trainable prompt state of a method.

Importing the package registers every built-in learner by name.
"""

from vlprompt.learners import (  # noqa: F401  (registration)
    clip_adapter,
    clip_lora,
    cocoop,
    coop,
    ivlp,
    linear_probe,
    lpp,
    maple,
    mmrl,
    plot,
    tcp,
    tip_adapter,
    zeroshot,
    zslp,
)
