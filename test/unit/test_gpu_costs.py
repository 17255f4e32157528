"""GPU-side costs removed without changing numerics, checked on CPU against the uncached computation:
weights cast once for autocast, RoPE / position-embedding tables cached per size, timestep tensors and
seeded noise kept on the device, uint8 image upload."""
from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pixel_perfect_ros.inference.backends.torch_backend import TorchBackend, cast_for_autocast
from pixel_perfect_ros.inference.preprocess import image_to_device, image_to_tensor
from pixel_perfect_ros.inference.sampling import (
    NOISE_SHAPES_KEPT, DeviceNoise, device_timesteps, sample_depth, seeded_noise)
from pixel_perfect_ros.model import dit as dit_module
from pixel_perfect_ros.model import tensor_cache
from pixel_perfect_ros.model.dinov2 import DinoVisionTransformer
from pixel_perfect_ros.model.dit import ROPE_SIZES_KEPT, SEMANTICS_DIM, DiT
from pixel_perfect_ros.model.flow import sampling_timesteps
from pixel_perfect_ros.model.random_weights import randomize_
from pixel_perfect_ros.model.semantics import DepthAnythingV2Semantics, MoGe2Encoder, MoGe2Semantics

CPU = torch.device("cpu")
LOW_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # both run under CPU autocast in torch 2.13
TIMESTEPS = sampling_timesteps(4)


def tiny_dit() -> DiT:
    return randomize_(DiT(hidden_size=32, depth=2, num_heads=2), seed=0).eval().requires_grad_(False)


def tiny_vit() -> DinoVisionTransformer:
    return randomize_(DinoVisionTransformer(embed_dim=32, depth=2, num_heads=2, pos_grid=4), seed=1).eval()


def tiny_encoders() -> dict[str, nn.Module]:
    """A DA2-style encoder (conv patch embed, linears) and a MoGe-2 one (plus 1x1 conv projections)."""
    moge = MoGe2Semantics(MoGe2Encoder(tiny_vit(), [0, 1], dim_out=16))
    return {"da2": DepthAnythingV2Semantics(tiny_vit()).requires_grad_(False),
            "moge2": randomize_(moge, seed=2).eval().requires_grad_(False)}


def inputs(height: int = 32, width: int = 48, seed: int = 3):
    """(image (1, 3, H, W) in [0, 1], semantics (1, h*w, 1024), noise (1, 1, H, W)), seeded."""
    generator = torch.Generator().manual_seed(seed)
    tokens = (height // 16) * (width // 16)
    return (torch.rand(1, 3, height, width, generator=generator),
            torch.randn(1, tokens, SEMANTICS_DIM, generator=generator),
            torch.randn(1, 1, height, width, generator=generator))


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.view(torch.int32)


def autocast_sample(dit: nn.Module, dtype: torch.dtype | None, height: int = 32, width: int = 48) -> torch.Tensor:
    """The sampling loop on ``inputs`` under CPU autocast to ``dtype`` (None: float32, no autocast)."""
    image, semantics, noise = inputs(height, width)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return sample_depth(dit, image, semantics, noise, TIMESTEPS)


# ------------------------------------------------------------------------------------------------
# 1. Weights cast once for autocast
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOW_DTYPES))
def test_sampling_with_cast_weights_is_bit_identical(name):
    dit, dtype = tiny_dit(), LOW_DTYPES[name]
    expected = autocast_sample(dit, dtype)  # autocast casts the float32 weights at every call
    got = autocast_sample(cast_for_autocast(dit, dtype), dtype)
    assert torch.equal(bits(got), bits(expected))
    with torch.inference_mode():
        assert not torch.equal(sample_depth(dit, *inputs(), TIMESTEPS), expected)  # autocast does matter here


@pytest.mark.parametrize("name", sorted(LOW_DTYPES))
@pytest.mark.parametrize("kind", ["da2", "moge2"])
def test_encoders_with_cast_weights_are_bit_identical(kind, name):
    encoder, dtype = tiny_encoders()[kind], LOW_DTYPES[name]
    image = inputs()[0]
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        expected = encoder.forward_semantics(image)
        got = cast_for_autocast(encoder, dtype).forward_semantics(image)
    assert torch.equal(got, expected)


def test_cast_copy_casts_only_linear_and_conv_and_shares_nothing():
    dit = tiny_dit()
    before = {key: value.clone() for key, value in dit.state_dict().items()}
    cast = cast_for_autocast(dit, torch.bfloat16)
    for layer in cast.modules():
        own = list(layer.parameters(recurse=False))
        expected = torch.bfloat16 if isinstance(layer, (nn.Linear, nn.Conv2d)) else torch.float32
        assert all(p.dtype == expected and not p.requires_grad for p in own), type(layer).__name__
    assert cast.blocks[0].attn.q_norm.weight.dtype == torch.float32  # LayerNorm weights stay float32
    original_storage = {t.untyped_storage().data_ptr() for t in dit.state_dict().values()}
    assert not original_storage & {t.untyped_storage().data_ptr() for t in cast.state_dict().values()}
    for key, value in dit.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[key]), key


def test_torch_backend_runs_cast_copies_for_low_precision_only():
    dit, encoder = tiny_dit(), tiny_encoders()["da2"]
    plain = TorchBackend(dit, encoder, CPU, "fp32")
    assert plain.sampling_dit is dit and plain.encoding_encoder is encoder
    backend = TorchBackend(dit, encoder, CPU, "bf16")
    assert backend.sampling_dit.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert backend.encoding_encoder.pretrained.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert dit.blocks[0].attn.qkv.weight.dtype == torch.float32  # the given modules are left alone
    image, semantics, noise = inputs()
    with torch.inference_mode():
        got = backend.sample(image, semantics, noise, TIMESTEPS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = sample_depth(dit, image, semantics, noise, TIMESTEPS).float()
            expected_tokens = encoder.forward_semantics(image)
        assert torch.equal(got, expected)
        assert torch.equal(backend.encode(image), expected_tokens)


# ------------------------------------------------------------------------------------------------
# 2. RoPE tables and resized position embeddings cached per size
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def rope_calls(monkeypatch):
    """How many RoPE tables the DiT has computed."""
    calls = []
    compute = dit_module.rope2d_cos_sin
    monkeypatch.setattr(dit_module, "rope2d_cos_sin", lambda *args: calls.append(1) or compute(*args))
    return calls


def test_rope_tables_are_computed_once_per_size(rope_calls):
    dit = tiny_dit()
    first = autocast_sample(dit, torch.bfloat16)  # 4 DiT calls at one size
    assert len(rope_calls) == 2  # the coarse and the fine grid, once
    autocast_sample(dit, torch.bfloat16, 48, 32)
    assert len(rope_calls) == 4
    assert torch.equal(autocast_sample(dit, torch.bfloat16), first) and len(rope_calls) == 4


def test_rope_cache_gives_the_uncached_outputs(monkeypatch):
    dit = tiny_dit()
    cached = [autocast_sample(dit, None) for _ in range(2)]
    monkeypatch.setattr(tensor_cache, "caching_allowed", lambda device: False)
    uncached = tiny_dit()
    assert torch.equal(bits(cached[1]), bits(autocast_sample(uncached, None)))
    assert len(uncached._rope_cache) == 0


def test_rope_cache_keeps_a_few_sizes(rope_calls):
    dit = tiny_dit()
    sizes = [(32, 16 * (k + 2)) for k in range(ROPE_SIZES_KEPT + 1)]
    for height, width in sizes:
        dit.rope_tables(height // 16, width // 16, CPU)
    assert len(dit._rope_cache) == ROPE_SIZES_KEPT
    count = len(rope_calls)
    dit.rope_tables(sizes[-1][0] // 16, sizes[-1][1] // 16, CPU)  # kept
    dit.rope_tables(sizes[0][0] // 16, sizes[0][1] // 16, CPU)  # dropped first
    assert len(rope_calls) == count + 2


@pytest.mark.parametrize("flag", ["is_compiling", "is_exporting"])
def test_caches_are_off_while_compiling_or_exporting(flag, monkeypatch, rope_calls):
    monkeypatch.setattr(torch.compiler, flag, lambda: True)
    assert not tensor_cache.caching_allowed(CPU)
    dit = tiny_dit()
    for _ in range(2):
        dit.rope_tables(2, 3, CPU)
    assert len(rope_calls) == 4 and len(dit._rope_cache) == 0


def test_caches_are_off_while_tracing():
    dit = tiny_dit()
    image, semantics, noise = inputs()
    x = torch.cat([noise, image], dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about Python ints from shapes
        torch.jit.trace(dit, (x, semantics, torch.tensor(500)), check_trace=False)
    assert len(dit._rope_cache) == 0


def test_cached_tables_made_in_inference_mode_serve_training():
    dit = tiny_dit().requires_grad_(True)
    image, semantics, noise = inputs()
    x = torch.cat([noise, image], dim=1)
    with torch.inference_mode():
        dit(x, semantics, torch.tensor(500))
    assert len(dit._rope_cache) == 1
    dit(x, semantics, torch.tensor(500)).square().sum().backward()  # RoPE tables saved for backward
    assert dit.blocks[0].attn.qkv.weight.grad is not None


def test_copies_and_pickles_of_a_model_start_with_empty_caches():
    dit = tiny_dit()
    autocast_sample(dit, None)
    assert len(dit._rope_cache) == 1
    assert len(copy.deepcopy(dit)._rope_cache) == 0
    assert len(pickle.loads(pickle.dumps(dit))._rope_cache) == 0


@pytest.fixture
def resize_calls(monkeypatch):
    """How many position-embedding resizes the ViTs have computed."""
    calls = []
    compute = DinoVisionTransformer._resized_pos_encoding
    monkeypatch.setattr(DinoVisionTransformer, "_resized_pos_encoding",
                        lambda self, rows, cols: calls.append(1) or compute(self, rows, cols))
    return calls


def test_position_embedding_is_resized_once_per_size(resize_calls):
    vit = tiny_vit()
    image = torch.randn(1, 3, 28, 42)
    with torch.inference_mode():
        first = vit(image)
        assert torch.equal(vit(image), first) and len(resize_calls) == 1
        vit(torch.randn(1, 3, 42, 28))
        assert len(resize_calls) == 2
        vit(torch.randn(1, 3, 56, 56))  # the native 4 x 4 grid: the table itself
        assert len(resize_calls) == 2 and vit.interpolate_pos_encoding(4, 4) is vit.pos_embed


def test_position_embedding_cache_gives_the_uncached_outputs(monkeypatch):
    vit, image = tiny_vit(), torch.randn(2, 3, 28, 42)
    with torch.inference_mode():
        cached = [vit(image) for _ in range(2)]
    monkeypatch.setattr(tensor_cache, "caching_allowed", lambda device: False)
    with torch.inference_mode():
        assert torch.equal(bits(cached[1]), bits(vit(image)))


def test_position_embedding_cache_sees_new_weights(resize_calls):
    vit = tiny_vit()
    with torch.no_grad():
        vit.interpolate_pos_encoding(2, 3)
        vit.load_state_dict(randomize_(tiny_vit(), seed=9).state_dict())
        got = vit.interpolate_pos_encoding(2, 3)
        assert len(resize_calls) == 2 and torch.equal(got, vit._resized_pos_encoding(2, 3))


def test_position_embedding_is_not_cached_while_trained(resize_calls):
    vit = tiny_vit().requires_grad_(True)
    vit(torch.randn(1, 3, 28, 42)).sum().backward()
    assert len(vit._pos_cache) == 0 and vit.pos_embed.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------
# 3. Timestep tensors made once
# ------------------------------------------------------------------------------------------------

def test_timestep_tensors_are_made_once_and_never_written():
    tensors = device_timesteps(TIMESTEPS, CPU)
    assert device_timesteps(list(TIMESTEPS), "cpu") is tensors
    assert [t.item() for t in tensors] == TIMESTEPS
    assert all(t.dtype == torch.int32 and t.ndim == 0 and not t.is_inference() for t in tensors)
    versions = [t._version for t in tensors]
    dit = tiny_dit()
    expected = autocast_sample(dit, torch.bfloat16)
    image, semantics, noise = inputs()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        explicit = sample_depth(dit, image, semantics, noise, TIMESTEPS,
                                [torch.tensor(t, dtype=torch.int32) for t in TIMESTEPS])
    assert torch.equal(expected, explicit)
    assert [t._version for t in tensors] == versions and [t.item() for t in tensors] == TIMESTEPS


# ------------------------------------------------------------------------------------------------
# 4. Seeded noise kept on the device
# ------------------------------------------------------------------------------------------------

def test_device_noise_is_drawn_once_per_seed_as_seeded_noise():
    noise = DeviceNoise()
    first = noise((1, 1, 32, 48), 7, CPU)
    assert torch.equal(bits(first), bits(seeded_noise((1, 1, 32, 48), 7)))
    assert noise([1, 1, 32, 48], 7, "cpu") is first
    assert not torch.equal(noise((1, 1, 32, 48), 8, CPU), first)
    assert not torch.equal(noise((1, 1, 32, 48), None, CPU), noise((1, 1, 32, 48), None, CPU))


def test_device_noise_keeps_a_few_latents():
    noise = DeviceNoise()
    first = noise((1, 1, 16, 16), 0, CPU)
    for k in range(NOISE_SHAPES_KEPT):
        noise((1, 1, 16, 16 * (k + 2)), 0, CPU)
    again = noise((1, 1, 16, 16), 0, CPU)
    assert again is not first and torch.equal(again, first)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_nothing_writes_into_the_shared_noise(dtype):
    image, semantics, _ = inputs()
    noise = DeviceNoise()((1, 1, 32, 48), 5, CPU)
    version = noise._version
    with torch.inference_mode():
        TorchBackend(tiny_dit(), tiny_encoders()["da2"], CPU, dtype).sample(image, semantics, noise, TIMESTEPS)
    assert noise._version == version and torch.equal(noise, seeded_noise((1, 1, 32, 48), 5))


# ------------------------------------------------------------------------------------------------
# 5. uint8 image upload
# ------------------------------------------------------------------------------------------------

def test_image_to_device_equals_image_to_tensor_bit_for_bit():
    values = np.arange(256, dtype=np.uint8)
    image = np.stack([values.reshape(16, 16), values[::-1].reshape(16, 16), values.reshape(16, 16).T], axis=-1)
    got = image_to_device(image, CPU)
    assert got.shape == (1, 3, 16, 16) and got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(bits(got), bits(image_to_tensor(image)))


def test_image_to_device_takes_views_and_read_only_arrays():
    image = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    frozen = image.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch.from_numpy's warning on a read-only array
        for view in (image[:, ::-1], image[..., ::-1], frozen):
            assert torch.equal(image_to_device(view, "cpu"), image_to_tensor(view))


def test_image_to_device_rejects_non_rgb8():
    with pytest.raises(ValueError, match="RGB image"):
        image_to_device(np.zeros((4, 4, 3), np.float32), CPU)
