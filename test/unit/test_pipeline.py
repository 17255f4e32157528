"""The PPD pipeline: official end-to-end sampling parity, seeding, precision, and input checks."""
import numpy as np
import pytest
import torch

from pixel_perfect_ros.inference.pipeline import PixelPerfectDepth
from pixel_perfect_ros.inference.sampling import sample_depth
from pixel_perfect_ros.model.dit import DiT
from pixel_perfect_ros.model.flow import sampling_timesteps

SMALL_AREA = 128 * 96


@pytest.fixture(scope="module")
def official_dit(fixtures_dir):
    dit = DiT(hidden_size=64, depth=4, num_heads=4)
    dit.load_state_dict(torch.load(fixtures_dir / "dit_small_state.pt", weights_only=True), strict=True)
    return dit.eval()


@pytest.fixture(scope="module")
def e2e(fixtures_dir):
    return torch.load(fixtures_dir / "dit_small_io.pt", weights_only=True)["e2e"]


@pytest.mark.parametrize("steps", [4, 10])
def test_sampling_matches_official_forward_test(official_dit, e2e, steps):
    case = e2e[f"steps{steps}"]
    timesteps = sampling_timesteps(steps)
    assert timesteps == case["timesteps"].tolist()
    with torch.inference_mode():
        depth = sample_depth(official_dit, e2e["image"], e2e["semantics"], case["init_noise"], timesteps)
        first = sample_depth(official_dit, e2e["image"], e2e["semantics"], case["init_noise"], timesteps[:1])
    assert (depth - case["depth"]).abs().max().item() < 5e-5
    # A one-step run lands on the x0 prediction of the first step, not on latents[1]: the last
    # step of any schedule differs from an intermediate one.
    assert not torch.allclose(first - 0.5, case["latents"][1], atol=1e-3)


@pytest.fixture(scope="module")
def model(tiny_checkpoints):
    return PixelPerfectDepth.from_checkpoints(
        tiny_checkpoints["ppd"], tiny_checkpoints["da2"], "da2", target_area=SMALL_AREA, seed=7
    )


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)


def test_output_sizes_and_values(model, image):
    prediction = model(image)
    assert prediction.depth.shape == (60, 90) and prediction.depth.dtype == np.float32
    assert prediction.processing_depth.shape == (96, 128)  # processing_size(60, 90, 128*96)
    assert np.isfinite(prediction.depth).all()
    assert prediction.depth.std() > 1e-3  # the random DiT moves the latent away from flat noise
    assert set(prediction.timings_ms) == {"preprocess", "semantics", "sampling", "postprocess"}


def test_seed_makes_calls_repeatable_whatever_the_global_rng(model, image):
    torch.manual_seed(1)
    first = model(image).depth
    torch.manual_seed(2)
    torch.randn(1000)
    np.testing.assert_array_equal(model(image).depth, first)


def test_seed_none_draws_fresh_noise(tiny_checkpoints, image):
    model = PixelPerfectDepth.from_checkpoints(
        tiny_checkpoints["ppd"], tiny_checkpoints["da2"], target_area=SMALL_AREA, seed=None
    )
    assert not np.array_equal(model(image).depth, model(image).depth)


@pytest.mark.parametrize("steps, dit_calls", [(1, 1), (4, 4), (29, 30)])
def test_dit_runs_once_per_timestep_and_semantics_once(tiny_checkpoints, image, steps, dit_calls):
    model = PixelPerfectDepth.from_checkpoints(
        tiny_checkpoints["ppd"], tiny_checkpoints["da2"], steps=steps, target_area=16 * 16 * 4
    )
    calls = {"dit": 0, "semantics": 0}
    model.dit.register_forward_hook(lambda *_: calls.__setitem__("dit", calls["dit"] + 1))
    model.semantics_encoder.pretrained.patch_embed.register_forward_hook(
        lambda *_: calls.__setitem__("semantics", calls["semantics"] + 1))
    model(image)
    assert calls == {"dit": dit_calls, "semantics": 1}


def test_moge2_semantics_variant(tiny_checkpoints, image):
    model = PixelPerfectDepth.from_checkpoints(
        tiny_checkpoints["ppd_moge"], tiny_checkpoints["moge2"], "moge2", target_area=SMALL_AREA
    )
    assert np.isfinite(model(image).depth).all()


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_reduced_precision_stays_close_to_fp32(tiny_checkpoints, model, image, dtype):
    low = PixelPerfectDepth.from_checkpoints(
        tiny_checkpoints["ppd"], tiny_checkpoints["da2"], target_area=SMALL_AREA, seed=7, dtype=dtype
    )
    reference = model(image).depth
    depth = low(image).depth
    assert depth.dtype == np.float32
    assert 0 < np.abs(depth - reference).max() < 0.2 * np.abs(reference).max()


def test_bad_arguments_and_images(tiny_checkpoints, model):
    with pytest.raises(ValueError, match="dtype must be one of"):
        PixelPerfectDepth.from_checkpoints(tiny_checkpoints["ppd"], tiny_checkpoints["da2"], dtype="fp8")
    with pytest.raises(ValueError, match="positive integer"):
        PixelPerfectDepth.from_checkpoints(tiny_checkpoints["ppd"], tiny_checkpoints["da2"], steps=0)
    with pytest.raises(ValueError, match="RGB image"):
        model(np.zeros((10, 10), np.uint8))


def test_semantics_width_must_fit_the_dit(tiny_checkpoints):
    from checkpoint_files import TINY_VIT

    from pixel_perfect_ros.inference.checkpoints import load_ppd_dit
    from pixel_perfect_ros.model.semantics import DepthAnythingV2Semantics

    with pytest.raises(ValueError, match="gives 64-d tokens; the PPD DiT takes 1024-d"):
        PixelPerfectDepth(load_ppd_dit(tiny_checkpoints["ppd"]), DepthAnythingV2Semantics.from_backbone_name(TINY_VIT))
