"""Backbones: the only package that touches open_clip internals."""

from vlprompt.backbones.embedded import BACKBONES, EMBEDDED_NAME, EMBEDDED_TAG, ShippedBackbone, register_backbone
from vlprompt.backbones.loader import Backbone, BackboneIdentity, list_backbones, load_backbone, text_context_length
from vlprompt.backbones.text_tower import TextTower

__all__ = [
    "BACKBONES",
    "EMBEDDED_NAME",
    "EMBEDDED_TAG",
    "Backbone",
    "BackboneIdentity",
    "ShippedBackbone",
    "TextTower",
    "list_backbones",
    "load_backbone",
    "register_backbone",
    "text_context_length",
]
