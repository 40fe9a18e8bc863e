"""Backbones: the only package that touches open_clip internals."""

from vlprompt.backbones.embedded import EMBEDDED_NAME, EMBEDDED_TAG
from vlprompt.backbones.loader import Backbone, BackboneIdentity, list_backbones, load_backbone
from vlprompt.backbones.text_tower import TextTower

__all__ = [
    "EMBEDDED_NAME",
    "EMBEDDED_TAG",
    "Backbone",
    "BackboneIdentity",
    "TextTower",
    "list_backbones",
    "load_backbone",
]
