"""Shared test fixtures: the official parity data in ../shared/fixtures."""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = Path(os.environ.get("PPD_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Directory of the parity fixtures produced by running the official code."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"parity fixtures not found at {FIXTURES_DIR} (set PPD_FIXTURES)")
    return FIXTURES_DIR
