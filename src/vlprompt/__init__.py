"""vlprompt: soft-prompt tuning for CLIP-like vision-language models.

The verbs a user needs are attributes of the package (``vlprompt.load_backbone``,
``vlprompt.create_method``, ``vlprompt.fit``, ``vlprompt.train``, ``vlprompt.evaluate``,
``vlprompt.from_pretrained``, ``vlprompt.list_methods`` ...; see ``vlprompt.api``). They are imported on first use, so that
``import vlprompt`` and the command line's ``--help`` stay light.
"""

from vlprompt.version import __version__

_API = (
    "FitResult", "Method", "RunResult", "create_method", "describe", "evaluate", "export_classifier", "fit", "from_pretrained",
    "import_official", "list_backbones", "list_datasets", "list_learners", "list_methods", "list_presets",
    "list_protocols", "list_regularizers", "load_backbone", "save_pretrained", "train",
)
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from vlprompt import api

        return getattr(api, name)
    raise AttributeError(f"module 'vlprompt' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
