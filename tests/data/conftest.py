"""The miniature data root shared by the data tests (built once per session)."""

from __future__ import annotations

import pytest
from miniature_datasets import build_all


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """The miniature copy of every standard dataset; tests that damage it work on a copy."""
    return build_all(tmp_path_factory.mktemp("datasets"))
