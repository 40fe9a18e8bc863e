"""Prompt learners: the trainable prompt state of a method.

Importing the package registers every built-in learner by name.
"""

from vlprompt.learners import (clip_adapter, clip_lora, cocoop, coop, ivlp, linear_probe, lpp, maple, tip_adapter,  # noqa: F401
                               zeroshot, zslp)  # (registration)
