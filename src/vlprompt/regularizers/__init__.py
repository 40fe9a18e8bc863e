"""Regularizers: what shapes training besides the learner's cross-entropy.

Importing the package registers every built-in regularizer by name.
"""

from vlprompt.regularizers import (clap, dekg, dept, kgcoop, mmrl_loss, nemesis, npt, prograd,  # noqa: F401
                                   promptsrc, qprompt)  # (registration)
