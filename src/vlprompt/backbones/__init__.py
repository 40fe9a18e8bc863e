"""Backbones: the only package that touches open_clip internals."""

from vlprompt.backbones.embedded import BACKBONES, EMBEDDED_NAME, EMBEDDED_TAG, ShippedBackbone, register_backbone
from vlprompt.backbones.loader import (
                                      Backbone,
                                      BackboneIdentity,
                                      list_backbones,
                                      load_backbone,
                                      open_clip_knows,
                                      save_open_clip_dir,
                                      text_context_length,
)
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
    "open_clip_knows",
    "register_backbone",
    "save_open_clip_dir",
    "text_context_length",
]
