import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """Real Omniglot (npz + official zips) beside the checkout; DISTMETA_OMNIGLOT overrides."""
    path = Path(os.environ.get("DISTMETA_OMNIGLOT", REPO.parent / "shared" / "data" / "omniglot"))
    if not (path / "images_background.npz").is_file():
        pytest.fail(f"Omniglot test data missing at {path}; set DISTMETA_OMNIGLOT")
    return path
