"""Protocols: which runs a paper's table needs, and the table.

Importing the package registers every built-in protocol by name.
"""

from vlprompt.protocols import base_to_new, few_shot, imbalanced, transfer  # noqa: F401  (registration)
