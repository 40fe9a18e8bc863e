"""Error types that carry a message a user can act on.

Every error the library raises on bad input is a ``VlpromptError``; the command line prints its
message without a traceback.
"""


class VlpromptError(Exception):
    """Base class of all user-facing errors."""


class ConfigError(VlpromptError, ValueError):
    """An option has an invalid name or value."""


class BackboneError(VlpromptError):
    """A backbone or its weights cannot be loaded, or an artifact does not fit the backbone."""


class DataError(VlpromptError):
    """A dataset, split file or image is missing or unreadable."""


class ArtifactError(VlpromptError):
    """A saved prompt or a checkpoint is damaged, tampered with or not vlprompt's; it is not loaded."""


class WriteError(VlpromptError, OSError):
    """A file could not be written (no space left, quota exceeded, read-only file system, no permission).

    ``errno`` and ``filename`` are the failed write's; the message is the sentence for the user."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TrainingError(VlpromptError, FloatingPointError):
    """Training diverged (a non-finite loss); the message says which setting to change."""


def check_choice(option: str, value, choices) -> None:
    """Raise a ConfigError naming the option and its valid values when ``value`` is not one of them."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{option}={value!r} is not valid; choose one of: {valid}")
