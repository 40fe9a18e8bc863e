"""Prompt learners: the trainable prompt state of a method.

Importing the package registers every built-in learner by name.
"""

from vlprompt.learners import (clip_adapter, cocoop, coop, ivlp, linear_probe, lpp, maple, plot,  # noqa: F401
                               mmrl, tcp, tip_adapter, zeroshot, zslp)  # (registration)
