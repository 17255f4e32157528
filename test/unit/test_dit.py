"""Parity of model/dit.py with the official PPD DiT (fixtures in test/fixtures)."""
import json

import pytest
import torch

from pixel_perfect_ros.model.dit import (
    SEMANTICS_DIM, DiT, apply_rope2d, dit_config_from_state_dict, grid_positions, rope2d_cos_sin,
    timestep_embedding)

DIT_ATOL = 5e-5  # fixtures/README.md: official fp32 vs fp64 moves by 3.5e-6
COMPONENT_ATOL = 1e-5  # elementwise sin/cos/RoPE tables of values <= 1 (observed <= 2.4e-7 on any kernel set)
STATE_FILES = {"main": "dit_small_state.pt", "hd64": "dit_small_hd64_state.pt"}


def _load(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def dit_io(fixtures_dir):
    return _load(fixtures_dir / "dit_small_io.pt")


@pytest.fixture(scope="module")
def small_configs(fixtures_dir):
    configs = json.loads((fixtures_dir / "dit_small_config.json").read_text())["configs"]
    return {name: cfg["constructor_args"] for name, cfg in configs.items()}


@pytest.fixture(scope="module")
def manifest(fixtures_dir):
    return json.loads((fixtures_dir / "dit_ppd_state_dict_manifest.json").read_text())


@pytest.fixture(scope="module")
def full_size_state_dict():
    with torch.device("meta"):
        return DiT().state_dict()


def _tiny_dit():
    torch.manual_seed(0)
    return DiT(hidden_size=32, depth=2, num_heads=2).eval()


@pytest.mark.parametrize("name", sorted(STATE_FILES))
def test_small_dit_matches_official(name, fixtures_dir, dit_io, small_configs):
    model = DiT(**small_configs[name]).eval()
    model.load_state_dict(_load(fixtures_dir / STATE_FILES[name]), strict=True)
    case = dit_io[name]
    assert case["timestep"].ndim == 0 and case["timestep_b2"].shape == (2,)
    with torch.no_grad():
        out = model(case["x"], case["semantics"], case["timestep"])
        out_b2 = model(case["x_b2"], case["semantics_b2"], case["timestep_b2"])
    assert out.shape == case["out"].shape == (1, 1, 64, 96)
    assert out_b2.shape == case["out_b2"].shape == (2, 1, 64, 96)
    assert (out - case["out"]).abs().max().item() < DIT_ATOL
    assert (out_b2 - case["out_b2"]).abs().max().item() < DIT_ATOL


def test_scalar_timestep_broadcasts_like_per_sample(fixtures_dir, dit_io, small_configs):
    model = DiT(**small_configs["main"]).eval()
    model.load_state_dict(_load(fixtures_dir / STATE_FILES["main"]))
    case = dit_io["main"]
    with torch.no_grad():
        shared = model(case["x_b2"], case["semantics_b2"], torch.tensor(500, dtype=torch.int32))
        per_sample = model(case["x_b2"], case["semantics_b2"], torch.tensor([500.0, 500.0]))
        other = model(case["x_b2"], case["semantics_b2"], torch.tensor([500.0, 250.0]))
    torch.testing.assert_close(shared, per_sample, atol=DIT_ATOL, rtol=0)  # GEMM rounding (M=1 vs M=2 rows)
    assert (other[1] - shared[1]).abs().max().item() > 1e-3  # the timestep matters per sample


def test_timestep_embedding_matches_official(dit_io):
    case = dit_io["timestep_embedding_256"]
    emb = timestep_embedding(case["t"])
    assert emb.dtype == torch.float32 and emb.shape == case["emb"].shape == (6, 256)
    assert (emb - case["emb"]).abs().max().item() < COMPONENT_ATOL


def test_rope2d_matches_official(dit_io):
    case = dit_io["rope2d_freq100"]
    positions = case["positions"]  # (2, 15, 2), 3x5 grid
    assert torch.equal(grid_positions(3, 5), positions[0])
    cos, sin = rope2d_cos_sin(positions, head_dim=64)  # (2, 15, 64)
    out = apply_rope2d(case["tokens"], cos.unsqueeze(1), sin.unsqueeze(1))
    assert (out - case["out"]).abs().max().item() < COMPONENT_ATOL
    # what the model uses: one table from the grid size, broadcast over batch and heads
    cos, sin = rope2d_cos_sin(grid_positions(3, 5), head_dim=64)
    out = apply_rope2d(case["tokens"], cos, sin)
    assert (out - case["out"]).abs().max().item() < COMPONENT_ATOL


def test_full_size_state_dict_matches_manifest(manifest, full_size_state_dict):
    expected = {key: entry["shape"] for key, entry in manifest["keys"].items()}
    actual = {key: list(tensor.shape) for key, tensor in full_size_state_dict.items()}
    assert actual == expected
    assert len(actual) == manifest["num_keys"] == 352
    assert sum(t.numel() for t in full_size_state_dict.values()) == 499_842_112
    assert full_size_state_dict["proj_fusion.0.weight"].shape == (4096, 1024 + SEMANTICS_DIM)


@pytest.mark.parametrize("name", sorted(STATE_FILES))
def test_config_from_small_state_dict(name, fixtures_dir, small_configs):
    config = dit_config_from_state_dict(_load(fixtures_dir / STATE_FILES[name]))
    assert config == small_configs[name]


def test_config_from_full_size_state_dict(manifest, full_size_state_dict):
    assert dit_config_from_state_dict(full_size_state_dict) == manifest["constructor_args"]


def test_config_from_non_dit_state_dict_names_missing_keys(full_size_state_dict):
    prefixed = {f"dit.{key}": value for key, value in full_size_state_dict.items()}
    with pytest.raises(ValueError, match="x_embedder.proj.weight"):
        dit_config_from_state_dict(prefixed)


def test_fresh_model_is_adaln_zero():
    model = _tiny_dit()
    x = torch.randn(1, 4, 32, 48)
    out = model(x, torch.randn(1, 6, SEMANTICS_DIM), torch.tensor(500))
    assert out.shape == (1, 1, 32, 48)
    assert torch.count_nonzero(out) == 0  # zero final layer
    assert model.blocks[0].attn.qkv.weight.abs().max() > 0  # xavier, not zero


def test_height_not_multiple_of_16_raises():
    with pytest.raises(ValueError, match="multiples of 16"):
        _tiny_dit()(torch.randn(1, 4, 40, 48), torch.randn(1, 6, SEMANTICS_DIM), torch.tensor(1))


def test_semantics_token_mismatch_names_expected_and_actual():
    with pytest.raises(ValueError) as excinfo:
        _tiny_dit()(torch.randn(1, 4, 32, 48), torch.randn(1, 4, SEMANTICS_DIM), torch.tensor(1))
    message = str(excinfo.value)
    assert f"(1, 6, {SEMANTICS_DIM})" in message and f"(1, 4, {SEMANTICS_DIM})" in message
