"""The bundled tiny model: official formats, the documented size, and its measured accuracy kept.

The accuracy test scores the shipped files on the first scenes of the held-out test set of
docs/bundled-model.md (``make_dataset(..., seed=1)``; training used seed 0) with the official protocol. Thresholds are the
measured values (docs/bundled-model.md) with a margin, so a change that degrades the model, its
loading or the inference pipeline fails here.
"""
import numpy as np
import pytest

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.checkpoints import load_ppd_dit, load_semantics_encoder
from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.synthetic import make_dataset
from pixel_perfect_ros.training.evaluate import evaluate

TEST_SCENES = 24
# Measured on these 24 scenes (2026-11-24): AbsRel 0.258, delta1 0.687, chamfer 0.310 m; an untrained
# (hidden 128) DiT scored about 0.5 / 0.4 / 0.46.
MAX_ABS_REL = 0.30
MIN_DELTA1 = 0.62
MAX_CHAMFER_M = 0.36


def test_bundled_files_are_official_format_fp16_and_small():
    dit = load_ppd_dit(bundled.CHECKPOINT)
    load_semantics_encoder(bundled.SEMANTICS, bundled.SEMANTICS_TYPE)
    assert (dit.hidden_size, len(dit.blocks), dit.num_heads, dit.patch_size) == (256, 4, 4, 8)
    for path in (bundled.CHECKPOINT, bundled.SEMANTICS):
        assert path.stat().st_size < 20 * 2**20, path


@pytest.fixture(scope="module")
def test_set() -> dict[str, np.ndarray]:
    return make_dataset(TEST_SCENES, 96, 128, seed=1)


def test_bundled_model_keeps_its_measured_accuracy(test_set):
    model = PixelPerfectDepth.from_checkpoints(bundled.CHECKPOINT, bundled.SEMANTICS, bundled.SEMANTICS_TYPE,
                                               steps=4, target_area=bundled.TARGET_AREA, seed=0)
    table = evaluate({"ppd": lambda image: model(image).depth}, test_set["rgb"], test_set["depth"], test_set["K"])
    ppd = table["ppd"]
    assert ppd["abs_rel"] < MAX_ABS_REL, table
    assert ppd["delta_1"] > MIN_DELTA1, table
    assert ppd["chamfer_m"] < MAX_CHAMFER_M, table
