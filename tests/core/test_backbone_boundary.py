"""open_clip's internals are read in ``backbones/`` only; learners, regularizers and the engine use what it offers.

The boundary, as checked here on the syntax tree of every vlprompt module outside ``backbones/``
(importing open_clip there is refused by the import contract in pyproject.toml):
- no attribute is read off the Backbone's open_clip modules: nothing follows ``.visual.`` or ``.model.``;
  ``backbone.visual`` may only be handed to a ``backbones`` function, which does the reading;
- none of the attributes open_clip builds its towers from (``transformer``, ``resblocks``, ``conv1``,
  ``attn_mask``, ...) is read from any object: ``TextTower`` holds some of them too, for backbones' use.
String literals are no access: the official checkpoints' key names (``official_import``) may spell them.
One module is outside the boundary on purpose: ``world/pretrain.py`` builds and trains the embedded
open_clip model from scratch, so that model is its subject, not a backbone it prompts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "vlprompt"
OWNER = PACKAGE / "backbones"
PRETRAINING = PACKAGE / "world" / "pretrain.py"
#: the Backbone's attributes that are open_clip modules
OPEN_CLIP_HANDLES = {"visual", "model"}
#: attribute names of open_clip's towers (each one is checked to exist on the embedded model below)
OPEN_CLIP_INTERNALS = {
    "transformer", "resblocks", "conv1", "class_embedding", "positional_embedding", "patch_dropout", "ln_pre",
    "ln_post", "ln_final", "ln_1", "ln_2", "attn", "attn_mask", "attn_pool", "c_fc", "c_proj", "mlp", "proj",
    "text_projection", "token_embedding", "pool_type", "text_pool_type", "final_ln_after_pool", "_pool", "_embeds",
}


def internal_accesses(source: str) -> list[str]:
    """'line: expression' for every read of an open_clip internal in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        through_handle = isinstance(node.value, ast.Attribute) and node.value.attr in OPEN_CLIP_HANDLES
        if through_handle or node.attr in OPEN_CLIP_INTERNALS:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_backbones_reads_open_clip_internals():
    modules = sorted(p for p in PACKAGE.rglob("*.py") if not p.is_relative_to(OWNER) and p != PRETRAINING)
    assert {"learners", "regularizers", "engine"} <= {p.parent.name for p in modules}  # not an empty glob
    leaks = {str(p.relative_to(PACKAGE)): internal_accesses(p.read_text()) for p in modules}
    assert {path: found for path, found in leaks.items() if found} == {}
    assert internal_accesses(PRETRAINING.read_text())  # the one exception does read them: a true exception


@pytest.mark.parametrize(("source", "expected"), [
    ("n = len(backbone.text.transformer.resblocks)", ["1: backbone.text.transformer.resblocks",
                                                      "1: backbone.text.transformer"]),
    ("w = self.backbone.visual.transformer.width", ["1: self.backbone.visual.transformer"]),
    ("p = self.backbone.visual.proj", ["1: self.backbone.visual.proj"]),
    ("s = backbone.model.logit_scale", ["1: backbone.model.logit_scale"]),
    ("x = tower.attn_mask[:4, :4]", ["1: tower.attn_mask"]),
    ("f = encode_image_deep(backbone.visual, images, ctx, {})\nw = backbone.text.width\nk = 'visual.conv1'", []),
])
def test_the_check_finds_internal_reads_and_allows_handing_the_tower_over(source, expected):
    assert internal_accesses(source) == expected


def test_every_internal_name_is_an_attribute_of_open_clips_towers(tiny_backbone):
    """The list describes the real model, so a name missing from it is a real gap, not a typo."""
    attributes = {name for module in tiny_backbone.model.modules() for name in dir(module)}
    assert OPEN_CLIP_INTERNALS - attributes == set()
