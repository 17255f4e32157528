"""evaluation/uncertainty.py (the scores of one image's samples) and tools/bench_uncertainty.py (its smoke run)."""
import json

import numpy as np
import pytest

from pixel_perfect_ros.evaluation.uncertainty import REMOVED_FRACTIONS, cleaning_masks, score_samples
from pixel_perfect_ros.synthetic.dataset import make_dataset
from pixel_perfect_ros.tools import bench_uncertainty


@pytest.fixture(scope="module")
def scene():
    data = make_dataset(1, 48, 64, seed=1)
    return data["rgb"][0], data["depth"][0], data["K"]


def noisy_samples(gt: np.ndarray, noise: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """(n, H, W) normalised log-depth of ``gt`` with per-pixel noise of standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    return np.stack([np.log1p(gt) + noise * rng.standard_normal(gt.shape) for _ in range(n)]).astype(np.float32)


def test_each_cleaning_removes_the_same_share_of_pixels(scene):
    _, gt, _ = scene
    spread = np.random.default_rng(0).random(gt.shape).astype(np.float32)
    valid = np.isfinite(gt).sum()
    for fraction in REMOVED_FRACTIONS:
        masks = cleaning_masks(gt, spread, fraction)
        assert masks["uncertainty"].sum() == round(fraction * valid)
        assert masks["both"].sum() == round(fraction * valid)
        assert masks["flying_pixel"].sum() <= round(fraction * valid) + 0.01 * valid  # the filter's steps are coarse


def test_a_spread_that_follows_the_error_ranks_it_better_than_chance(scene):
    rgb, gt, K = scene
    noise = np.where(np.arange(gt.shape[1]) < gt.shape[1] // 2, 0.002, 0.2) * np.ones_like(gt)  # noisy right half
    scores = score_samples(noisy_samples(gt, noise, 8), rgb, gt, K)
    assert scores.ause["spread"] < 0.5 * scores.ause["random"]
    assert scores.spearman["spread"] > 0.3
    assert set(scores.curves) == {"spread", "gradient", "random", "oracle"}
    assert all(len(values) == len(REMOVED_FRACTIONS) for values in scores.chamfer.values())


def test_the_smoke_run_prints_the_tables_and_writes_the_json(tmp_path, capsys):
    out = tmp_path / "uncertainty.json"
    assert bench_uncertainty.main(["--smoke", "--json", str(out), "--figure", str(tmp_path / "figures" / "u.png")]) == 0
    printed = capsys.readouterr().out
    assert "| N | AUSE spread |" in printed and "| removed by |" in printed and "| N | ms / frame |" in printed
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"2", "3"} and set(result["cost_ms"]) == {"1", "2", "4", "8"}
    assert all(np.isfinite(row["ause"]["spread"]) for row in result["summary"].values())
    assert (tmp_path / "figures" / "u.png").stat().st_size > 0  # its folder made


def test_one_sample_is_refused(capsys):
    assert bench_uncertainty.main(["--samples", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
