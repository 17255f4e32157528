"""Training of the tiny bundled model: targets (PPD_SPEC 2.1), losses and timesteps (PPD_SPEC 6), the
two training loops, the saved files through the official loaders, and the ``ppd-train`` CLI."""
import argparse
import json

import numpy as np
import pytest
import torch
from checkpoint_files import TINY_VIT

from pixel_perfect_ros.inference.checkpoints import load_ppd_dit, load_semantics_encoder
from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.tools.train import build_parser, main
from pixel_perfect_ros.training.baseline import BaselineConfig, DepthBaseline, EncoderConfig
from pixel_perfect_ros.training.losses import (gradient_loss, masked_l1, masked_mse, multi_scale_gradient_loss,
                                               predicted_x0, interpolate, sample_timesteps)
from pixel_perfect_ros.training.targets import flow_target, normalised_log_depth
from pixel_perfect_ros.training.train import (BaselineTrainConfig, PPDTrainConfig, baseline_loss, compute_semantics,
                                              images_to_tensor, load_baseline, ppd_loss, round_weights_,
                                              save_baseline, save_ppd_checkpoint, save_semantics_checkpoint,
                                              train_baseline, train_ppd)

TINY_ENCODER = EncoderConfig(backbone=TINY_VIT, intermediate_layers=(0, 1))
TINY_BASELINE = BaselineConfig(encoder=TINY_ENCODER)
TINY_PPD = dict(hidden_size=32, depth=2, num_heads=2)


# ------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------

def test_normalised_log_depth_matches_spec_quantiles_and_clamp():
    k = np.arange(100, dtype=np.float64)
    depth = (np.exp(k / 25) - 1).astype(np.float32).reshape(1, 10, 10)  # l = k/25, all < 80 m
    depth[0, 0, 0] = 0.0  # invalid (k = 0)
    depth[0, 0, 1] = np.nan  # invalid (k = 1)
    depth[0, 9, 9] = 120.0  # valid, outside the quantile set (k = 99 replaced)
    n, mask = normalised_log_depth(torch.from_numpy(depth))
    # Quantile set: k = 2..98 (97 values); linear quantiles at positions 0.02*96 and 0.98*96.
    q2, q98 = (2 + 0.02 * 96) / 25, (2 + 0.98 * 96) / 25
    expected = np.clip((k / 25 - q2) / (q98 - q2), -0.5, 1.0).reshape(10, 10)
    assert mask.numpy()[0].sum() == 98 and not mask[0, 0, 0] and not mask[0, 0, 1] and mask[0, 9, 9]
    valid = mask.numpy()[0]
    np.testing.assert_allclose(n.numpy()[0][valid][:-1], expected[valid][:-1], atol=1e-5)
    assert n[0, 9, 9].item() == 1.0  # log(121) far above q98: clamped to 1
    assert n[0, 0, 0].item() == 0.0 and n[0, 0, 1].item() == 0.0
    assert n[0, 0, 2].item() == pytest.approx((2 / 25 - q2) / (q98 - q2), abs=1e-5)  # slightly below 0


def test_flat_scene_uses_minimum_log_range_and_clamps_both_ends():
    depth = np.full((2, 10, 10), 5.0, dtype=np.float32)
    depth[0, 0, 0] = 90.0  # beyond 80 m: not in the quantiles; (log 91 - log 6) / 1e-6 -> clamp 1
    depth[0, 0, 1] = 0.1  # 1 of 99 quantile pixels: below q2 (= q98 = log 6) -> clamp -0.5
    depth[1] = 100.0  # no pixel nearer than 80 m: the image is not supervised
    n, mask = normalised_log_depth(torch.from_numpy(depth))
    assert n[0, 0, 0].item() == 1.0 and n[0, 0, 1].item() == -0.5
    assert torch.all(n[0].flatten()[2:] == 0) and mask[0].all()
    assert not mask[1].any() and torch.all(n[1] == 0)
    x0, fmask = flow_target(torch.from_numpy(depth))
    assert x0.shape == (2, 1, 10, 10) and fmask.dtype == torch.float32
    assert x0[0, 0, 0, 0].item() == 0.5 and x0[0, 0, 0, 1].item() == -1.0


def test_normalised_log_depth_rejects_bad_shape():
    with pytest.raises(ValueError, match="N, H, W"):
        normalised_log_depth(torch.ones(4, 4))


# ------------------------------------------------------------------------------------------------
# Losses and timesteps
# ------------------------------------------------------------------------------------------------

def test_masked_losses_zero_when_perfect_and_ignore_masked_pixels():
    target = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(target)
    mask[:, :, :2] = 0
    wrong_where_masked = target.clone()
    wrong_where_masked[:, :, :2] += 3.0
    for loss in (masked_mse, masked_l1, multi_scale_gradient_loss):
        assert loss(target, target, mask).item() == 0.0
        assert loss(wrong_where_masked, target, mask).item() == 0.0
        assert loss(target + torch.randn_like(target), target, mask).item() > 0
    assert masked_mse(target + 2.0, target, mask).item() == pytest.approx(4.0, rel=1e-5)


def test_gradient_loss_hand_example():
    pred = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 1, 3)
    target = torch.zeros_like(pred)
    ones = torch.ones_like(pred)
    assert gradient_loss(pred, target, ones).item() == pytest.approx(3 / 3)  # (|1| + |2|) / 3 pixels
    # scale 2 keeps pixels 0 and 2: |3| / 2
    assert multi_scale_gradient_loss(pred, target, ones, scales=2).item() == pytest.approx(1.0 + 1.5)
    partial = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)  # only the pair (0, 1) is valid
    assert gradient_loss(pred, target, partial).item() == pytest.approx(1 / 2)
    vertical = pred.view(1, 1, 3, 1)
    assert gradient_loss(vertical, target.view(1, 1, 3, 1), ones.view(1, 1, 3, 1)).item() == pytest.approx(1.0)
    assert gradient_loss(pred, target, torch.zeros_like(pred)).item() == 0.0
    assert multi_scale_gradient_loss(pred + 5.0, pred, ones).item() == 0.0  # shift-invariant


def test_logit_normal_timesteps():
    t = sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (20000,)
    assert 0 <= t.min().item() and t.max().item() <= 1000 and t.min() < 100 and t.max() > 900
    assert abs(t.float().median().item() - 500) <= 10  # sigmoid(N(0,1)) is symmetric about 1/2
    assert torch.equal(t, sample_timesteps(20000, torch.Generator().manual_seed(0)))


def test_flow_interpolation_and_x0_prediction_round_trip():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([0, 500, 1000])
    x_t = interpolate(x0, eps, t)
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[2], eps[2])
    torch.testing.assert_close(predicted_x0(x_t, eps - x0, t), x0)


# ------------------------------------------------------------------------------------------------
# Training loops
# ------------------------------------------------------------------------------------------------

def plane_dataset(n: int = 6, height: int = 32, width: int = 32, seed: int = 0):
    """Tilted planes; the image is a colour ramp of the depth, so depth is learnable from RGB."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width] / max(height, width)
    depth = np.stack([1 + rng.uniform(0, 3) + rng.uniform(-2, 4) * v + rng.uniform(-1, 1) * u
                      for _ in range(n)]).astype(np.float32)
    depth = np.maximum(depth, 0.3)
    depth[:, :2, :3] = np.nan  # a hole
    scaled = (depth - np.nanmin(depth)) / (np.nanmax(depth) - np.nanmin(depth))
    rgb = np.nan_to_num(np.stack([scaled, 1 - scaled, 0.5 * np.ones_like(scaled)], -1) * 255)
    return rgb.astype(np.uint8), depth


def test_baseline_training_reduces_loss_and_is_deterministic():
    rgb, depth = plane_dataset()
    config = BaselineTrainConfig(model=TINY_BASELINE, steps=15, batch_size=4, lr=1e-3)
    images = images_to_tensor(rgb)
    n, mask = normalised_log_depth(torch.from_numpy(depth))
    args = (images, n.unsqueeze(1), mask.unsqueeze(1).float(), config)
    logs = []
    model = train_baseline(rgb, depth, config, seed=3, callback=logs.append)
    untrained = train_baseline(rgb, depth, BaselineTrainConfig(model=TINY_BASELINE, steps=0), seed=3)
    with torch.no_grad():
        before, after = baseline_loss(untrained, *args)[0].item(), baseline_loss(model, *args)[0].item()
    assert after < 0.7 * before
    assert [log.step for log in logs] == list(range(1, 16)) and logs[-1].stage == "baseline"
    again = train_baseline(rgb, depth, config, seed=3)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    out = model(images[:2])
    assert out.shape == (2, 1, 32, 32)


@pytest.fixture(scope="module")
def encoder():
    return DepthBaseline(TINY_BASELINE).semantics.eval()


def test_ppd_training_reduces_loss_and_is_deterministic(encoder):
    rgb, depth = plane_dataset()
    config = PPDTrainConfig(**TINY_PPD, steps=60, finetune_steps=10, batch_size=6, lr=3e-3)
    images = images_to_tensor(rgb)
    x0, mask = flow_target(torch.from_numpy(depth))
    semantics = compute_semantics(encoder, images)
    assert semantics.shape == (6, 4, 1024)

    def eval_loss(dit):  # same timesteps and noise for both models
        with torch.no_grad():
            return ppd_loss(dit, images, semantics, x0, mask, torch.Generator().manual_seed(9))[0].item()

    logs = []
    dit = train_ppd(rgb, depth, encoder, config, seed=5, callback=logs.append)
    untrained = train_ppd(rgb, depth, encoder, PPDTrainConfig(**TINY_PPD, steps=0, finetune_steps=0), seed=5)
    before, after = eval_loss(untrained), eval_loss(dit)
    assert after < 0.95 * before  # adaLN-Zero: the first steps only open the gates
    assert [log.stage for log in logs] == ["ppd"] * 50 + ["ppd_finetune"] * 10
    assert "grad" in logs[-1].parts and "grad" not in logs[0].parts
    again = train_ppd(rgb, depth, encoder, config, seed=5)
    for (name, a), b in zip(dit.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ValueError, match="finetune_steps"):
        train_ppd(rgb, depth, encoder, PPDTrainConfig(**TINY_PPD, steps=2, finetune_steps=3))


def test_training_rejects_bad_arrays(encoder):
    rgb, depth = plane_dataset(height=24)
    with pytest.raises(ValueError, match="multiples of 16"):
        train_ppd(rgb, depth, encoder, PPDTrainConfig(**TINY_PPD, steps=1, finetune_steps=0))
    rgb, depth = plane_dataset()
    with pytest.raises(ValueError, match="uint8"):
        train_baseline(rgb.astype(np.float32), depth, BaselineTrainConfig(model=TINY_BASELINE, steps=1))


# ------------------------------------------------------------------------------------------------
# Files through the official loaders, and the CLI
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_saved_files_load_and_run_in_pipeline(tmp_path, dtype):
    rgb, depth = plane_dataset()
    baseline = train_baseline(rgb, depth, BaselineTrainConfig(model=TINY_BASELINE, steps=2, batch_size=3), seed=0)
    semantics = round_weights_(baseline.semantics, dtype)
    dit = train_ppd(rgb, depth, semantics, PPDTrainConfig(**TINY_PPD, steps=2, finetune_steps=1, batch_size=3))
    save_ppd_checkpoint(round_weights_(dit, dtype), tmp_path / "ppd.pth", dtype)
    save_semantics_checkpoint(semantics, TINY_ENCODER, tmp_path / "moge2.pt", dtype)
    save_baseline(baseline, tmp_path / "baseline.pth")

    loaded_dit = load_ppd_dit(tmp_path / "ppd.pth")
    loaded_sem = load_semantics_encoder(tmp_path / "moge2.pt", "moge2")
    for a, b in zip(dit.state_dict().values(), loaded_dit.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(semantics.state_dict().values(), loaded_sem.state_dict().values()):
        assert torch.equal(a, b)  # exact also for fp16 storage: the weights were rounded before saving
    images = images_to_tensor(rgb[:1])
    torch.testing.assert_close(load_baseline(tmp_path / "baseline.pth")(images), baseline(images))

    model = PixelPerfectDepth(loaded_dit, loaded_sem, steps=2, target_area=32 * 32, seed=0)
    prediction = model(rgb[0])
    assert prediction.depth.shape == (32, 32) and np.isfinite(prediction.depth).all()


def test_cli_parser_validates_size_and_data_source():
    parser = build_parser()
    args = parser.parse_args(["--synthetic", "4", "--size", "160x96", "--out", "x"])
    assert args.size == (96, 160) and args.synthetic == 4
    for bad in (["--synthetic", "4", "--size", "100x96", "--out", "x"], ["--out", "x"],
                ["--synthetic", "0", "--out", "x"], ["--data", "a.npz", "--synthetic", "2", "--out", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parser._option_string_actions["--size"].type("128by96")


def test_cli_trains_and_writes_official_files(tmp_path, capsys):
    rgb, depth = plane_dataset(n=2, height=16, width=32)
    np.savez(tmp_path / "data.npz", rgb=rgb, depth=depth)
    out = tmp_path / "out"
    assert main(["--data", str(tmp_path / "data.npz"), "--out", str(out), "--baseline-steps", "1",
                 "--ppd-steps", "2", "--finetune-steps", "1", "--batch-size", "2", "--log-every", "1"]) == 0
    report = json.loads((out / "train.json").read_text())
    assert report["images"] == 2 and report["ppd"]["config"]["steps"] == 2
    assert report["ppd"]["final_step"]["stage"] == "ppd_finetune" and report["wall_s"] > 0
    assert load_semantics_encoder(out / "moge2.pt", "moge2").out_dim == 1024
    assert load_ppd_dit(out / "ppd.pth").hidden_size == PPDTrainConfig.hidden_size
    assert "[ppd_finetune] step 2" in capsys.readouterr().out


def test_lossy_ground_truth_creates_mixed_pixels_at_edges_only():
    from pixel_perfect_ros.training.evaluate import lossy

    flat = np.full((32, 64), 2.0, np.float32)
    np.testing.assert_allclose(lossy(flat), flat)
    step = np.where(np.arange(64) < 30, 1.0, 3.0).astype(np.float32)[None].repeat(32, 0)
    mixed = (lossy(step) > 1.01) & (lossy(step) < 2.99)
    assert mixed.any() and not mixed[:, :20].any() and not mixed[:, 44:].any()


def test_evaluate_scores_every_source_on_a_synthetic_test_set(tmp_path):
    from pixel_perfect_ros.synthetic import make_dataset
    from pixel_perfect_ros.training.evaluate import evaluate, load_models

    rgb, depth = plane_dataset(n=2, height=32, width=48)
    np.savez(tmp_path / "data.npz", rgb=rgb, depth=depth)
    assert main(["--data", str(tmp_path / "data.npz"), "--out", str(tmp_path / "out"), "--baseline-steps", "1",
                 "--ppd-steps", "1", "--finetune-steps", "0", "--batch-size", "2"]) == 0
    test = make_dataset(2, 32, 48, seed=5, supersample=1)
    table = evaluate(load_models(tmp_path / "out", 32 * 48), test["rgb"], test["depth"], test["K"])
    assert set(table) == {"ppd", "baseline", "gt_lossy"}
    for row in table.values():
        assert 0 <= row["abs_rel"] < 10 and 0 <= row["delta_1"] <= 1 and row["chamfer_m"] >= 0
    assert table["gt_lossy"]["chamfer_m"] > 0 and table["gt_lossy"]["abs_rel"] > 0


def test_cli_reuses_a_previous_runs_encoder_with_semantics_from(tmp_path):
    rgb, depth = plane_dataset(n=2, height=16, width=32)
    np.savez(tmp_path / "data.npz", rgb=rgb, depth=depth)
    common = ["--data", str(tmp_path / "data.npz"), "--ppd-steps", "1", "--finetune-steps", "0", "--batch-size", "2"]
    assert main(common + ["--out", str(tmp_path / "first"), "--baseline-steps", "1"]) == 0
    assert main(common + ["--out", str(tmp_path / "second"), "--semantics-from", str(tmp_path / "first")]) == 0
    assert (tmp_path / "second" / "moge2.pt").read_bytes() == (tmp_path / "first" / "moge2.pt").read_bytes()
    report = json.loads((tmp_path / "second" / "train.json").read_text())
    assert report["baseline"]["from"] == str(tmp_path / "first") and "config" not in report["baseline"]
