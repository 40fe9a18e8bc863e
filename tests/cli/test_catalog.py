"""``cli/catalog.py`` (what `vlprompt list methods|learners|regularizers` read without importing torch) says
what the registered classes say."""

from __future__ import annotations

from vlprompt.api import list_methods
from vlprompt.cli import catalog
from vlprompt.cli.catalog_gen import catalog_from_registries
from vlprompt.cli.main import methods_matrix, render_matrix

REGENERATE = "the catalog is stale: run `python -m vlprompt.cli.catalog_gen` and commit src/vlprompt/cli/catalog.py"


def test_catalog_matches_the_registered_classes():
    learners, regularizers = catalog_from_registries()
    assert catalog.LEARNERS == learners, REGENERATE
    assert catalog.REGULARIZERS == regularizers, REGENERATE


def test_the_listed_matrix_is_the_one_composition_computes():
    real = {key: [c.value for c in missing] for key, missing in list_methods().items()}
    assert methods_matrix() == render_matrix(real)
    assert any(real.values()) and not all(real.values())  # the matrix has both answers
