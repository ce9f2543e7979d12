import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (darknet_files)

SHARED = Path(os.environ.get("YOLO4_SHARED", ROOT.parent / "shared"))
CI = bool(os.environ.get("CI"))  # .ci/run: what a test needs must be there, never skipped


def shared_path(*parts: str) -> Path:
    """A file under ../shared (override with YOLO4_SHARED). In CI it must exist; elsewhere
    tests that need it are skipped with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if CI:
            raise FileNotFoundError(f"{path} is missing: CI must have ../shared beside the checkout")
        pytest.skip(f"{path} not available (set YOLO4_SHARED)")
    return path


@pytest.fixture(scope="session")
def darknet_dir() -> Path:
    return shared_path("darknet")


@pytest.fixture(scope="session")
def images_dir() -> Path:
    return shared_path("images")
