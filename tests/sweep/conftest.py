"""The image folder the sweep tests run on (built once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def images(tmp_path_factory, image_folder_factory):
    root = tmp_path_factory.mktemp("sweep-images")
    return image_folder_factory(root / "images", classnames=[f"thing {c}" for c in "abcd"], per_class=3)
