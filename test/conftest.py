"""Shared test fixtures: the official parity data, and small random-weight checkpoints in the official formats."""
import os
from pathlib import Path

import pytest
from checkpoint_files import write_da2_checkpoint, write_moge2_checkpoint, write_ppd_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = Path(os.environ.get("PPD_FIXTURES", REPO_ROOT / "test" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Directory of the parity fixtures produced by running the official code (test/fixtures/)."""
    if not (FIXTURES_DIR / "README.md").is_file():
        raise FileNotFoundError(f"parity fixtures not found at {FIXTURES_DIR}: they ship in test/fixtures/ "
                                "(PPD_FIXTURES overrides the folder)")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Paths of small random-weight checkpoints in the official formats: ppd, da2, ppd_moge, moge2."""
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {name: root / file for name, file in
             (("ppd", "ppd.pth"), ("da2", "depth_anything_v2_vitl.pth"), ("ppd_moge", "ppd_moge.pth"),
              ("moge2", "moge2.pt"))}
    write_ppd_checkpoint(paths["ppd"], seed=0)
    write_da2_checkpoint(paths["da2"])
    write_ppd_checkpoint(paths["ppd_moge"], seed=3)
    write_moge2_checkpoint(paths["moge2"])
    return paths
