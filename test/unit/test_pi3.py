"""Pi3 semantics encoder (PPVD) against the official parity fixtures, and its strict safetensors loader."""
import hashlib
import json

import numpy as np
import pytest
import safetensors.torch
import torch
from checkpoint_files import assert_matches_manifest

from pixel_perfect_ros.inference.checkpoints import (
    PI3_IGNORED,
    CheckpointError,
    load_pi3_semantics,
    pi3_semantics_from_state_dict,
)
from pixel_perfect_ros.model.pi3 import PI3_ARCHITECTURE, Pi3Semantics, pi3_config_from_state_dict
from pixel_perfect_ros.model.semantics import SemanticsEncoder

VARIANTS = ["w002", "w01"]
OUT_ATOL = 5e-4  # fixtures README: Pi3 96x128
OUT_512_MAX, OUT_512_MEAN = 3e-3, 1e-4  # fixtures README: Pi3 512x512
STEP_ATOL = 2e-4  # encoder output, single blocks: encoders/README.md DA2/MoGe-2 bound; observed <= 8.1e-6 (1 thread)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _load(path):
    return torch.load(path, weights_only=True)


def _images(u8: torch.Tensor) -> torch.Tensor:
    """The fixtures' uint8 -> float recipe (float64 division, then float32)."""
    return torch.from_numpy((u8.numpy() / 255.0).astype(np.float32))


def _errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs()
    return diff.max().item(), diff.mean().item()


@pytest.fixture(scope="module")
def encoders_dir(fixtures_dir):
    return fixtures_dir / "encoders"


@pytest.fixture(scope="module")
def io(encoders_dir):
    return _load(encoders_dir / "sem_pi3_small_io.pt")


def _model(encoders_dir, variant) -> Pi3Semantics:
    state = _load(encoders_dir / f"sem_pi3_small_state_{variant}.pt")
    return pi3_semantics_from_state_dict(state, encoders_dir / f"sem_pi3_small_state_{variant}.pt")


# ---------------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------------


def test_config_read_from_shapes_matches_the_official_construction(encoders_dir):
    construction = json.loads((encoders_dir / "sem_pi3_small.json").read_text())["construction"]
    config = pi3_config_from_state_dict(_load(encoders_dir / "sem_pi3_small_state_w002.pt"))
    official = construction["encoder_kwargs"]
    assert {k: config["encoder"][k] for k in ("embed_dim", "depth", "num_heads", "num_register_tokens",
                                               "interpolate_offset", "interpolate_antialias")} == {
        k: official[k] for k in ("embed_dim", "depth", "num_heads", "num_register_tokens",
                                 "interpolate_offset", "interpolate_antialias")}
    assert config["encoder"]["pos_grid"] == official["img_size"] // official["patch_size"]
    decoder = construction["decoder"]
    assert (config["decoder_depth"], config["decoder_num_heads"], config["mlp_ratio"]) == (
        decoder["dec_depth"], decoder["dec_num_heads"], decoder["mlp_ratio"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_small_clip_matches_official_with_intermediates(encoders_dir, io, variant):
    case = io["cases"]["f3_96x128"]
    ref = case[variant]
    model = _model(encoders_dir, variant)
    images = _images(case["image_u8"])  # (3, 3, 96, 128)
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest() == (
        json.loads((encoders_dir / "sem_pi3_small.json").read_text())["cases"]["f3_96x128"]["image_float_sha256"])

    tokens = model.encoder.forward_features(ref["vit_input"])
    assert _errors(tokens, ref["encoder_patchtokens"])[0] <= STEP_ATOL
    # Each decoder block from the official input of that block (errors do not accumulate).
    cos, sin = model.rope_tables(6, 8)
    inputs = [torch.cat([model.register_token[0].expand(3, -1, -1), ref["encoder_patchtokens"]], 1),
              *ref["decoder_block_outputs"][:-1]]
    for i, (block, x, expected) in enumerate(zip(model.decoder, inputs, ref["decoder_block_outputs"])):
        if i % 2:
            y = block(x.reshape(1, -1, x.shape[-1]), cos.repeat(3, 1), sin.repeat(3, 1)).reshape(x.shape)
        else:
            y = block(x, cos, sin)
        assert _errors(y, expected)[0] <= STEP_ATOL, i
    # The chained decoder and the whole path.
    states = list(model.decoder_states(ref["encoder_patchtokens"], 6, 8))
    assert _errors(torch.stack(states), ref["decoder_block_outputs"])[0] <= STEP_ATOL
    out = model.forward_semantics(images)
    assert out.shape == (3, 48, 128) == (3, 48, model.out_dim)
    assert _errors(out, ref["out"])[0] <= OUT_ATOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_512_clip_matches_official(encoders_dir, io, variant):
    case = io["cases"]["f3_512x512"]
    a, b = case["A"][..., :, None], case["B"][..., None, :]  # (3, 3, 512, 1), (3, 3, 1, 512) int64
    u8 = ((a + b + ((a * b) >> 3)) & 255).to(torch.uint8)  # (3, 3, 512, 512)
    assert hashlib.sha256(u8.numpy().tobytes()).hexdigest() == case["image_u8_sha256"]
    images = _images(u8)
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest() == case["image_float_sha256"]
    ref = _load(encoders_dir / f"sem_pi3_small_io_512_{variant}.pt")["out"]
    out = _model(encoders_dir, variant).forward_semantics(images)
    assert out.shape == (3, 1024, 128)
    max_err, mean_err = _errors(out, ref)
    assert max_err <= OUT_512_MAX and mean_err <= OUT_512_MEAN


def test_frames_interact_only_through_global_blocks(encoders_dir, io):
    model = _model(encoders_dir, "w01")
    images = _images(io["cases"]["f3_96x128"]["image_u8"])
    out = model.forward_semantics(images)
    flipped = images.clone()
    flipped[2] = flipped[2].flip(-1)
    changed = model.forward_semantics(flipped)
    assert _errors(changed[:2], out[:2])[0] > 1e-3  # global attention mixes the clip
    single = torch.cat([model.forward_semantics(images[i:i + 1]) for i in range(3)])
    assert _errors(single, out)[0] > 1e-3


# ---------------------------------------------------------------------------------------------------
# Full-size key layout (meta device)
# ---------------------------------------------------------------------------------------------------


def test_full_size_keys_match_official_manifest(fixtures_dir):
    official = json.loads((fixtures_dir / "semantics_encoders_state_dict_manifest.json").read_text())["Pi3"]
    assert official["num_keys"] == 1210
    ignored = {k for k in official["keys"] if k.startswith(tuple(PI3_IGNORED))}
    entries = {k: v for k, v in official["keys"].items() if k not in ignored}
    assert len(ignored) == 216 and len(entries) == 1210 - 216
    with torch.device("meta"):
        model = Pi3Semantics.from_architecture(**PI3_ARCHITECTURE)
    assert_matches_manifest(model, entries)
    assert isinstance(model, SemanticsEncoder) and model.out_dim == 2048
    # The released architecture is also what the shapes imply.
    meta_state = {k: torch.empty(v["shape"], device="meta") for k, v in official["keys"].items()}
    config = pi3_config_from_state_dict(meta_state)
    assert (config["encoder"]["num_heads"], config["decoder_depth"], config["decoder_num_heads"]) == (16, 36, 16)


# ---------------------------------------------------------------------------------------------------
# Loader: official model.safetensors format
# ---------------------------------------------------------------------------------------------------


def _small_official_file(encoders_dir, path, heads: bool = True, drop: str | None = None) -> dict:
    """Write the w01 fixture as a flat safetensors file, optionally with (random) head keys."""
    state = _load(encoders_dir / "sem_pi3_small_state_w01.pt")
    if heads:
        generator = torch.Generator().manual_seed(0)
        for prefix in PI3_IGNORED:
            state[f"{prefix}0.weight"] = torch.randn(8, 8, generator=generator)
    if drop:
        del state[drop]
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


def test_safetensors_round_trip_ignores_the_heads(encoders_dir, io, tmp_path):
    _small_official_file(encoders_dir, tmp_path / "model.safetensors")
    loaded = load_pi3_semantics(tmp_path / "model.safetensors")
    images = _images(io["cases"]["f3_96x128"]["image_u8"])
    expected = _model(encoders_dir, "w01").forward_semantics(images)
    assert torch.equal(loaded.forward_semantics(images), expected)
    assert not any(t.is_meta for t in loaded.state_dict().values())
    _small_official_file(encoders_dir, tmp_path / "bare.safetensors", heads=False)
    assert torch.equal(load_pi3_semantics(tmp_path / "bare.safetensors").forward_semantics(images), expected)


@pytest.mark.parametrize("dropped", ["decoder.2.ls2.gamma", "image_std", "encoder.register_tokens"])
def test_missing_key_is_named(encoders_dir, tmp_path, dropped):
    _small_official_file(encoders_dir, tmp_path / "model.safetensors", drop=dropped)
    with pytest.raises(CheckpointError, match=dropped.replace(".", r"\.")):
        load_pi3_semantics(tmp_path / "model.safetensors")


def test_unexpected_key_is_named_and_bad_files_are_errors(encoders_dir, tmp_path):
    state = _small_official_file(encoders_dir, tmp_path / "model.safetensors")
    state["encoder.mask_token"] = torch.zeros(1, 64)
    with pytest.raises(CheckpointError, match=r"unexpected: encoder\.mask_token"):
        pi3_semantics_from_state_dict(state, "extra.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_pi3_semantics(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_pi3_semantics(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="not a Pi3 state dict"):
        pi3_semantics_from_state_dict({"pretrained.pos_embed": torch.zeros(1, 5, 8)}, "da2.pth")
