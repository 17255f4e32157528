"""Parity of model/dit_video.py with the official PPVD DiT_Video, and loading ``ppvd.pth``."""
import json
import math

import pytest
import torch
from checkpoint_files import randomize_, write_ppd_checkpoint

from pixel_perfect_ros.inference.checkpoints import CheckpointError, load_ppvd_dit
from pixel_perfect_ros.model.dit_video import VIDEO_SEMANTICS_DIM, ReferenceTokens, VideoDiT, sincos_2d_pos_embed

VIDEO_MAX_ATOL = 3e-3  # fixtures/README.md: official fp32 vs fp64 moves by up to 5e-4 (a few pixels)
VIDEO_MEAN_ATOL = 2e-5
SINCOS_ATOL = 1e-5  # float64 sin/cos rounded to float32 (|v| <= 1): libm / SLEEF / SVML may differ by 1 ulp (6e-8)
SMALL_VIDEO = dict(input_size=64, hidden_size=16, num_heads=2)  # 4x4 coarse, 8x8 fine, 2x2 pooled


def _load(path):
    return torch.load(path, weights_only=True)


def _checksum(t: torch.Tensor) -> dict:
    t = t.double()
    return {"sum": t.sum().item(), "abs_sum": t.abs().sum().item()}


@pytest.fixture(scope="module")
def video_config(fixtures_dir):
    return json.loads((fixtures_dir / "dit_video_small_config.json").read_text())


@pytest.fixture(scope="module")
def video_io(fixtures_dir):
    """The fixture's inputs rebuilt from their rank-2 recipes (float32, in the stated order)."""
    io = _load(fixtures_dir / "dit_video_small_io.pt")
    xa, xb = io["xa"], io["xb"]  # (3, 4, 512, 2)
    x = xa[..., :, None, 0] * xb[..., None, :, 0] + xa[..., :, None, 1] * xb[..., None, :, 1]
    su, sv = io["su"], io["sv"]  # (3, 1024, 4), (4, 2048)
    semantics = su[..., 0:1] * sv[0] + su[..., 1:2] * sv[1]
    semantics = semantics + su[..., 2:3] * sv[2]
    semantics = semantics + su[..., 3:4] * sv[3]
    return {**io, "x": x, "semantics": semantics}


@pytest.fixture(scope="module")
def video_state(fixtures_dir):
    return _load(fixtures_dir / "dit_video_small_state.pt")


def _small_video_dit(seed=0):
    return randomize_(VideoDiT(**SMALL_VIDEO), seed).eval()


def _small_inputs(frames=3):
    size = SMALL_VIDEO["input_size"]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(frames, 4, size, size, generator=generator)
    semantics = torch.randn(frames, (size // 16) ** 2, VIDEO_SEMANTICS_DIM, generator=generator)
    return x, semantics, torch.tensor(500, dtype=torch.int32)


def test_fixture_inputs_match_their_checksums(video_io):
    assert video_io["x"].shape == (3, 4, 512, 512)
    assert video_io["semantics"].shape == (3, 1024, 2048)
    for name in ("x", "semantics"):
        got, want = _checksum(video_io[name]), video_io[f"{name}_checksum"]
        assert got == pytest.approx(want, rel=1e-12, abs=1e-9), name


def test_small_video_dit_matches_official(video_config, video_state, video_io):
    model = VideoDiT(**video_config["constructor_args"]).eval()
    model.load_state_dict(video_state, strict=True)
    assert video_io["timestep"].ndim == 0
    with torch.no_grad():
        out = model(video_io["x"], video_io["semantics"], video_io["timestep"])
    assert out.shape == video_io["out"].shape == (3, 1, 512, 512)
    error = (out - video_io["out"]).abs()
    assert error.max().item() < VIDEO_MAX_ATOL
    assert error.mean().item() < VIDEO_MEAN_ATOL


def test_full_size_keys_and_shapes_match_manifest(fixtures_dir):
    manifest = json.loads((fixtures_dir / "dit_video_state_dict_manifest.json").read_text())
    with torch.device("meta"):
        model = VideoDiT(**manifest["constructor_args"])
    state = model.state_dict()
    assert list(state) == list(manifest["keys"])
    assert len(state) == manifest["num_keys"] == 395
    for key, info in manifest["keys"].items():
        assert list(state[key].shape) == info["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == info["dtype"], key
    params = dict(model.named_parameters())
    assert {k: p.requires_grad for k, p in params.items()} == {
        k: info["requires_grad"] for k, info in manifest["keys"].items()}
    assert sum(t.numel() for t in state.values()) == manifest["total_numel"]


def test_default_constructor_is_the_official_one(fixtures_dir):
    manifest = json.loads((fixtures_dir / "dit_video_state_dict_manifest.json").read_text())
    with torch.device("meta"):
        model = VideoDiT()
    assert (model.input_size, model.patch_size, len(model.blocks)) == (512, 8, 24)
    assert sum(t.numel() for t in model.state_dict().values()) == manifest["total_numel"]


def test_sincos_table_matches_direct_formula():
    dim, grid = 8, 3
    table = sincos_2d_pos_embed(dim, grid)
    assert table.shape == (grid * grid, dim) and table.dtype == torch.float32
    quarter = dim // 4
    for r in range(grid):
        for c in range(grid):
            expected = []
            for pos in (c, r):  # first half the column, second half the row
                angles = [pos * 10000.0 ** (-k / quarter) for k in range(quarter)]
                expected += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
            torch.testing.assert_close(table[r * grid + c], torch.tensor(expected), atol=SINCOS_ATOL, rtol=0)


def test_pos_embed_is_the_official_table(video_config, video_state):
    model = VideoDiT(**video_config["constructor_args"])
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed, video_state["pos_embed"], atol=SINCOS_ATOL, rtol=0)


@pytest.mark.parametrize("size", [(256, 256), (512, 256), (256, 512)])
def test_only_512_frames_are_accepted_like_timm(video_config, size):
    model = VideoDiT(**video_config["constructor_args"])
    semantics = torch.zeros(3, 1024, VIDEO_SEMANTICS_DIM)
    with pytest.raises(ValueError, match=r"only takes 512x512 frames"):
        model(torch.zeros(3, 4, *size), semantics, torch.tensor(500))


@pytest.mark.parametrize("frames", [1, 2])
def test_fewer_than_three_frames_is_an_error(frames):
    x, semantics, t = _small_inputs(frames)
    with pytest.raises(ValueError, match=r"at least 3 frames"):
        _small_video_dit()(x, semantics, t)


def test_semantics_width_is_checked():
    x, semantics, t = _small_inputs()
    with pytest.raises(ValueError, match=r"semantics must be \(N, 16, 2048\)"):
        _small_video_dit()(x, semantics[..., :1024], t)


def test_depth_other_than_24_is_rejected():
    with pytest.raises(ValueError, match=r"depth must be 24"):
        VideoDiT(**SMALL_VIDEO, depth=12)


def test_only_frames_0_1_2_are_special():
    """Temporal and spatial blocks are frame-equivariant; only the reference tokens break that."""
    model = _small_video_dit()
    x, semantics, t = _small_inputs(frames=5)
    with torch.no_grad():
        out = model(x, semantics, t)
        swap_plain = [0, 1, 2, 4, 3]  # non-reference frames swapped: outputs swap with them
        torch.testing.assert_close(model(x[swap_plain], semantics[swap_plain], t), out[swap_plain],
                                   atol=1e-5, rtol=0)
        swap_ref = [3, 1, 2, 0, 4]  # a reference frame moved out: every frame sees other references
        moved = model(x[swap_ref], semantics[swap_ref], t)
    assert (moved[4] - out[4]).abs().max().item() > 1e-4


def _write_ppvd(path, seed=0):
    state = {f"dit_video.{k}": v for k, v in _small_video_dit(seed).state_dict().items()}
    torch.save(state, path)
    return state


def test_ppvd_checkpoint_loads_every_tensor(tmp_path):
    state = _write_ppvd(tmp_path / "ppvd.pth")
    dit = load_ppvd_dit(tmp_path / "ppvd.pth")
    assert isinstance(dit, VideoDiT) and dit.input_size == SMALL_VIDEO["input_size"]
    assert not dit.pos_embed.requires_grad
    loaded = dit.state_dict()
    assert set(loaded) == {k.removeprefix("dit_video.") for k in state}
    for key, value in state.items():
        assert torch.equal(loaded[key.removeprefix("dit_video.")], value), key
    x, semantics, t = _small_inputs()
    with torch.no_grad():
        torch.testing.assert_close(dit.eval()(x, semantics, t), _small_video_dit()(x, semantics, t))


def test_ppvd_mismatch_names_keys_and_file(tmp_path):
    state = _write_ppvd(tmp_path / "ppvd.pth")
    state.pop("dit_video.temporal_blocks.2.mlp.fc1.bias")
    torch.save(state, tmp_path / "ppvd.pth")
    with pytest.raises(CheckpointError, match=r"missing: temporal_blocks\.2\.mlp\.fc1\.bias") as info:
        load_ppvd_dit(tmp_path / "ppvd.pth")
    assert str(tmp_path / "ppvd.pth") in str(info.value)


def test_ppd_checkpoint_is_not_a_ppvd_checkpoint(tmp_path):
    write_ppd_checkpoint(tmp_path / "ppd.pth")
    with pytest.raises(CheckpointError, match=r"no 'dit_video\.\*' keys, so it is not a PPVD checkpoint"):
        load_ppvd_dit(tmp_path / "ppd.pth")


# ------------------------------------------------------------------------------------------------
# Recorded reference tokens (stream_cached)
# ------------------------------------------------------------------------------------------------

def _identity_temporal(model: VideoDiT) -> VideoDiT:
    """Zero adaLN of the temporal blocks: gates 0, so each is the identity and frames stop interacting."""
    with torch.no_grad():
        for block in model.temporal_blocks:
            block.adaLN_modulation[-1].weight.zero_()
            block.adaLN_modulation[-1].bias.zero_()
    return model


def test_recording_forward_is_forward_and_records_shapes():
    model = _small_video_dit()
    x, semantics, t = _small_inputs(frames=3)
    with torch.no_grad():
        out, refs = model.forward_recording(x, semantics, t)
        assert torch.equal(out, model(x, semantics, t))
    assert isinstance(refs, ReferenceTokens)
    assert [tuple(p.shape) for p in refs.pooled] == [(1, 3 * 2 * 2, 16)] * 6  # 8x8 fine grid pooled 4x4
    assert [tuple(p.shape) for p in refs.temporal] == [(3, 8 * 8, 16)] * 3


@pytest.mark.parametrize("new_frames", [1, 4])
@pytest.mark.parametrize("timestep", [999, 250])
def test_cached_references_equal_the_full_window_without_temporal_mixing(new_frames, timestep):
    """Identity temporal blocks: the references' tokens do not depend on the new frames, so the new frames
    run alone against the recorded tokens give the new rows of the full [3 references + K new] window."""
    model = _identity_temporal(_small_video_dit())
    x, semantics, _ = _small_inputs(frames=3 + new_frames)
    t = torch.tensor(timestep, dtype=torch.int32)
    with torch.no_grad():
        _, refs = model.forward_recording(x[:3], semantics[:3], t)
        cached = model.forward_with_references(x[3:], semantics[3:], t, refs)
        full = model(x, semantics, t)
    assert cached.shape == (new_frames, 1, 64, 64)
    torch.testing.assert_close(cached, full[3:], rtol=0, atol=1e-5)


def test_cached_references_are_an_approximation_with_temporal_blocks():
    model = _small_video_dit()
    x, semantics, t = _small_inputs(frames=5)
    with torch.no_grad():
        _, refs = model.forward_recording(x[:3], semantics[:3], t)
        cached = model.forward_with_references(x[3:], semantics[3:], t, refs)
        full = model(x, semantics, t)
    assert (cached - full[3:]).abs().max().item() > 1e-4


def test_forward_with_references_checks_its_inputs():
    model = _small_video_dit()
    x, semantics, t = _small_inputs(frames=3)
    with torch.no_grad():
        _, refs = model.forward_recording(x, semantics, t)
        with pytest.raises(ValueError, match="one shared timestep"):
            model.forward_with_references(x[:1], semantics[:1], t.expand(1), refs)
        with pytest.raises(ValueError, match="references hold"):
            model.forward_with_references(x[:1], semantics[:1], t, ReferenceTokens(refs.pooled[:2], refs.temporal))
        with pytest.raises(ValueError, match="semantics"):
            model.forward_with_references(x[:2], semantics[:1], t, refs)
