"""Regularizers: what shapes training besides the learner's cross-entropy.

Importing the package registers every built-in regularizer by name.
"""

from vlprompt.regularizers import (  # noqa: F401  (registration)
    clap,
    dekg,
    dept,
    kgcoop,
    mmrl_loss,
    nemesis,
    npt,
    prograd,
    promptsrc,
    qprompt,
)
