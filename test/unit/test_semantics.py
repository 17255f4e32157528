"""DINOv2 backbone and the DA2 / MoGe-2 semantics encoders against the official parity fixtures."""
import json

import pytest
import torch
import torch.nn.functional as F
from checkpoint_files import assert_matches_manifest

from pixel_perfect_ros.model import dinov2
from pixel_perfect_ros.model.dinov2 import DinoVisionTransformer, dinov2_from_name
from pixel_perfect_ros.model.semantics import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DepthAnythingV2Semantics,
    MoGe2Encoder,
    MoGe2Semantics,
    SemanticsEncoder,
)

VARIANTS = ["w002", "w01"]
CASES = ["h64w96", "h80w112"]
# Parity tolerances hold for any CPU / SIMD width / library version: convolutions, matrix products and
# resampling kernels round differently there (tokens_in: 0 with AVX2 kernels, 4.3e-6 with AVX-512).
OUT_ATOL = 2e-4  # fixtures/encoders/README.md: DA2 / MoGe-2, independent fp32 re-implementation (max abs)
STEP_ATOL = OUT_ATOL  # single steps (resize, tokens, one block): same README bound; tanh GELU moves a w01 block 9e-4
FIXTURE_BACKBONE = "dinov2_small_fixture"  # name the official MoGe fixture registered at runtime


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def _backbone_kwargs(official: dict) -> dict:
    """Official ``DinoVisionTransformer`` kwargs -> ours; fails on anything we do not implement."""
    fixed = dict(in_chans=3, qkv_bias=True, ffn_bias=True, proj_bias=True, drop_path_rate=0.0,
                 init_values=1.0, ffn_layer="mlp", block_chunks=0)
    for key, value in fixed.items():
        assert official[key] == value, (key, official[key])
    assert official["img_size"] % official["patch_size"] == 0
    return dict(
        embed_dim=official["embed_dim"], depth=official["depth"], num_heads=official["num_heads"],
        patch_size=official["patch_size"], pos_grid=official["img_size"] // official["patch_size"],
        mlp_ratio=float(official["mlp_ratio"]), num_register_tokens=official["num_register_tokens"],
        interpolate_offset=official["interpolate_offset"],
        interpolate_antialias=official["interpolate_antialias"],
    )


def _load(path):
    return torch.load(path, weights_only=True)


# ---------------------------------------------------------------------------------------------------
# Depth Anything v2
# ---------------------------------------------------------------------------------------------------


def _encoder_fixture(fixtures_dir, name: str):
    """(config JSON, {variant: state dict}, io dict) of ``encoders/sem_<name>_small*``."""
    enc = fixtures_dir / "encoders"
    config = json.loads((enc / f"sem_{name}_small.json").read_text())
    states = {v: _load(enc / f"sem_{name}_small_state_{v}.pt") for v in VARIANTS}
    return config, states, _load(enc / f"sem_{name}_small_io.pt")


@pytest.fixture(scope="module")
def da2(fixtures_dir):
    return _encoder_fixture(fixtures_dir, "da2")


def _build_da2(da2, variant) -> DepthAnythingV2Semantics:
    config, states, _ = da2
    kwargs = _backbone_kwargs(config["construction"]["backbone_kwargs"])
    model = DepthAnythingV2Semantics(DinoVisionTransformer(**kwargs))
    model.load_state_dict(states[variant], strict=True)
    return model.eval()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_da2_matches_official(da2, variant, case):
    model = _build_da2(da2, variant)
    image = da2[2]["cases"][case]["image"]
    ref = da2[2]["cases"][case][variant]
    backbone = model.pretrained
    rows, cols = image.shape[2] // 16, image.shape[3] // 16

    # Step by step, each from the official previous step, so a failure names the wrong step.
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    vit_input = F.interpolate((image - mean) / std, (rows * 14, cols * 14), mode="bicubic", align_corners=False)
    assert _max_abs(vit_input, ref["vit_input"]) <= STEP_ATOL
    assert _max_abs(backbone.interpolate_pos_encoding(rows, cols), ref["pos_embed_interp"]) <= STEP_ATOL
    assert _max_abs(backbone.prepare_tokens(ref["vit_input"]), ref["tokens_in"]) <= STEP_ATOL
    previous = ref["tokens_in"]
    for i, block in enumerate(backbone.blocks):
        assert _max_abs(block(previous), ref["block_outputs"][i]) <= STEP_ATOL, f"block {i}"
        previous = ref["block_outputs"][i]
    (patches, cls), = backbone.get_intermediate_layers(ref["vit_input"], 1)
    assert _max_abs(cls, ref["cls_token_normed"]) <= STEP_ATOL
    assert _max_abs(patches, ref["out"]) <= STEP_ATOL

    # End to end.
    out = model.forward_semantics(image)
    assert out.shape == (1, rows * cols, model.out_dim) == ref["out"].shape
    assert _max_abs(out, ref["out"]) <= OUT_ATOL
    assert torch.equal(model(image), out)


def test_da2_batch_items_are_independent(da2):
    model = _build_da2(da2, "w01")
    image = da2[2]["cases"]["h64w96"]["image"]
    batch = torch.cat([image, image.flip(-1)])
    out = model.forward_semantics(batch)
    assert _max_abs(out[:1], da2[2]["cases"]["h64w96"]["w01"]["out"]) <= OUT_ATOL
    assert _max_abs(out[1:], model.forward_semantics(image.flip(-1))) <= OUT_ATOL  # batch 2 vs 1: GEMM shapes differ
    assert _max_abs(out[:1], out[1:]) > 0.1  # the flipped image really is different


def test_da2_built_on_meta_then_assigned_matches(da2):
    """The checkpoint loader builds on the meta device and loads with assign=True: no state may be
    left behind on meta (e.g. non-persistent normalisation buffers)."""
    config, states, io = da2
    kwargs = _backbone_kwargs(config["construction"]["backbone_kwargs"])
    with torch.device("meta"):
        model = DepthAnythingV2Semantics(DinoVisionTransformer(**kwargs))
    model.load_state_dict(states["w01"], strict=True, assign=True)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    image = io["cases"]["h80w112"]["image"]
    assert _max_abs(model.eval().forward_semantics(image), io["cases"]["h80w112"]["w01"]["out"]) <= OUT_ATOL


# ---------------------------------------------------------------------------------------------------
# MoGe-2
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moge(fixtures_dir):
    return _encoder_fixture(fixtures_dir, "moge2")


def _build_moge(moge, variant, monkeypatch) -> MoGe2Semantics:
    config, states, _ = moge
    construction = config["construction"]
    assert construction["encoder_kwargs"]["backbone"] == FIXTURE_BACKBONE
    monkeypatch.setitem(dinov2.DINOV2_ARCHITECTURES, FIXTURE_BACKBONE,
                        _backbone_kwargs(construction["backbone_kwargs"]))
    model = MoGe2Semantics.from_config(construction["encoder_kwargs"])
    model.load_state_dict(states[variant], strict=True)
    return model.eval()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_moge2_matches_official(moge, variant, case, monkeypatch):
    model = _build_moge(moge, variant, monkeypatch)
    encoder = model.encoder
    image = moge[2]["cases"][case]["image"]
    ref = moge[2]["cases"][case][variant]
    rows, cols = image.shape[2] // 16, image.shape[3] // 16
    assert encoder.layer_indices == [1, 2, 4, 5]

    # Step by step.
    size = (rows * 14, cols * 14)
    vit_input = F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)
    vit_input = (vit_input - encoder.image_mean) / encoder.image_std
    assert _max_abs(vit_input, ref["vit_input"]) <= STEP_ATOL
    layers = encoder.backbone.get_intermediate_layers(ref["vit_input"], encoder.layer_indices)
    assert len(layers) == 4
    for k, (tokens, cls) in enumerate(layers):
        assert _max_abs(tokens, ref["layer_tokens"][k]) <= STEP_ATOL, f"layer {k}"
        assert _max_abs(cls, ref["layer_cls_tokens"][k]) <= STEP_ATOL, f"layer {k}"
        if "proj_outputs" in ref:
            grid = ref["layer_tokens"][k].transpose(1, 2).reshape(1, -1, rows, cols)
            assert _max_abs(encoder.output_projections[k](grid), ref["proj_outputs"][k]) <= STEP_ATOL

    # The encoder API the full MoGe-2 model reuses: features and last listed CLS.
    features, cls = encoder(image, rows, cols)
    assert features.shape == (1, 1024, rows, cols)
    assert _max_abs(cls, ref["layer_cls_tokens"][-1]) <= STEP_ATOL

    # End to end.
    out = model.forward_semantics(image)
    assert out.shape == (1, rows * cols, model.out_dim) == ref["out"].shape
    assert _max_abs(out, ref["out"]) <= OUT_ATOL
    assert torch.equal(out, features.flatten(2).transpose(1, 2))


def test_moge2_int_layers_mean_last_n(moge, monkeypatch):
    model = _build_moge(moge, "w01", monkeypatch)
    backbone = model.encoder.backbone
    x = moge[2]["cases"]["h64w96"]["w01"]["vit_input"]
    last4 = backbone.get_intermediate_layers(x, 4)
    listed = backbone.get_intermediate_layers(x, [2, 3, 4, 5])
    assert backbone.resolve_layer_indices(4) == [2, 3, 4, 5]
    for (a, ca), (b, cb) in zip(last4, listed):
        assert torch.equal(a, b) and torch.equal(ca, cb)
    # layers 2 and 3 are not the fixture's 1 and 2: the index list matters.
    ref = moge[2]["cases"]["h64w96"]["w01"]["layer_tokens"]
    assert _max_abs(last4[0][0], ref[0]) > 0.01
    last_n_encoder = MoGe2Encoder(backbone, 4, 8)
    assert last_n_encoder.layer_indices == [2, 3, 4, 5] and len(last_n_encoder.output_projections) == 4


# ---------------------------------------------------------------------------------------------------
# Register variant (Pi3's encoder): offset 0 -> size= resize with antialias, registers after CLS
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_register_backbone_matches_pi3_encoder(fixtures_dir, variant):
    enc = fixtures_dir / "encoders"
    config = json.loads((enc / "sem_pi3_small.json").read_text())
    kwargs = _backbone_kwargs(config["construction"]["encoder_kwargs"])
    assert kwargs["interpolate_offset"] == 0.0 and kwargs["interpolate_antialias"] is True
    backbone = DinoVisionTransformer(**kwargs, has_mask_token=False)
    state = _load(enc / f"sem_pi3_small_state_{variant}.pt")
    prefix = "encoder."
    encoder_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    backbone.load_state_dict(encoder_state, strict=True)
    ref = _load(enc / "sem_pi3_small_io.pt")["cases"]["f3_96x128"][variant]
    assert _max_abs(backbone.prepare_tokens(ref["vit_input"]), ref["encoder_tokens_in"]) <= STEP_ATOL
    assert _max_abs(backbone.forward_features(ref["vit_input"]), ref["encoder_patchtokens"]) <= STEP_ATOL


def test_pos_embed_native_grid_is_unchanged_and_offset_matters():
    torch.manual_seed(0)
    backbone = DinoVisionTransformer(embed_dim=8, depth=1, num_heads=2, pos_grid=5)
    torch.nn.init.normal_(backbone.pos_embed)
    assert torch.equal(backbone.interpolate_pos_encoding(5, 5), backbone.pos_embed)
    by_scale = backbone.interpolate_pos_encoding(3, 4)
    assert by_scale.shape == (1, 1 + 12, 8)
    assert torch.equal(by_scale[:, 0], backbone.pos_embed[:, 0])
    backbone.interpolate_offset = 0.0
    by_size = backbone.interpolate_pos_encoding(3, 4)
    assert _max_abs(by_scale, by_size) > 0.05


# ---------------------------------------------------------------------------------------------------
# Full-size key layouts (built on the meta device: no memory, no init cost)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(fixtures_dir):
    return json.loads((fixtures_dir / "semantics_encoders_state_dict_manifest.json").read_text())


def test_full_size_da2_keys_match_official(manifest):
    entries = manifest["DA2_DepthAnythingV2_vitl_as_built_by_PPD"]["keys"]
    assert len(entries) == 343
    with torch.device("meta"):
        model = DepthAnythingV2Semantics.from_backbone_name("dinov2_vitl14")
    assert_matches_manifest(model, entries)
    assert model.out_dim == 1024


def test_full_size_moge2_encoder_keys_match_official(manifest):
    official = manifest["MoGe2_MoGeModel"]
    entries = {k: v for k, v in official["keys"].items() if k.startswith("encoder.")}
    assert len(entries) == 2 + 343 + 8
    with torch.device("meta"):
        model = MoGe2Semantics.from_config(official["model_config_used"]["encoder"])
    assert_matches_manifest(model, entries)
    assert model.out_dim == 1024 and model.encoder.layer_indices == [5, 11, 17, 23]


# ---------------------------------------------------------------------------------------------------
# Registry and input validation
# ---------------------------------------------------------------------------------------------------


def test_registry_names():
    assert isinstance(DepthAnythingV2Semantics(DinoVisionTransformer(8, 1, 2)), SemanticsEncoder)
    with torch.device("meta"):
        vits = dinov2_from_name("dinov2_vits14")
        reg = dinov2_from_name("dinov2_vitb14_reg", has_mask_token=False)
    assert (vits.embed_dim, vits.depth, vits.num_heads, vits.num_register_tokens) == (384, 12, 6, 0)
    assert (vits.interpolate_offset, vits.interpolate_antialias) == (0.1, False)
    assert (reg.embed_dim, reg.num_register_tokens, reg.interpolate_offset, reg.interpolate_antialias) == (
        768, 4, 0.0, True)
    assert reg.mask_token is None and tuple(reg.register_tokens.shape) == (1, 4, 768)
    with pytest.raises(ValueError, match="dinov2_vitx14"):
        dinov2_from_name("dinov2_vitx14")
    for name in ("dinov2_vitg14", "dinov2_vitg14_reg"):
        with pytest.raises(NotImplementedError, match="SwiGLU"):
            dinov2_from_name(name)
    with pytest.raises(ValueError, match="dim_out"):
        MoGe2Encoder.from_config({"backbone": "dinov2_vits14", "intermediate_layers": 4})


BAD_SHAPES = [(1, 3, 70, 96), (1, 3, 64, 90), (1, 3, 8, 16), (1, 4, 64, 96), (3, 64, 96)]


@pytest.mark.parametrize("shape", BAD_SHAPES)
def test_semantics_reject_bad_inputs(shape):
    torch.manual_seed(0)
    da2 = DepthAnythingV2Semantics(DinoVisionTransformer(8, 1, 2)).eval()
    moge = MoGe2Semantics(MoGe2Encoder(DinoVisionTransformer(8, 2, 2), [0, 1], 4)).eval()
    image = torch.rand(shape)
    for model in (da2, moge):
        with pytest.raises(ValueError):
            model.forward_semantics(image)
    good = torch.rand(1, 3, 32, 48)
    assert da2.forward_semantics(good).shape == (1, 6, 8)
    assert moge.forward_semantics(good).shape == (1, 6, 4)
    with pytest.raises(ValueError, match="floating"):
        da2.forward_semantics((good * 255).to(torch.uint8))


def test_backbone_rejects_bad_inputs():
    backbone = DinoVisionTransformer(8, 3, 2)
    with pytest.raises(ValueError, match="multiple of patch size"):
        backbone.forward_features(torch.rand(1, 3, 28, 30))
    with pytest.raises(ValueError, match="multiple of patch size"):
        backbone.get_intermediate_layers(torch.rand(1, 3, 0, 28), 1)
    assert backbone.forward_features(torch.rand(2, 3, 28, 42)).shape == (2, 6, 8)
    for bad in (0, 4, [], [1, 1], [2, 1], [-1, 2], [0, 3], True):
        with pytest.raises(ValueError):
            backbone.resolve_layer_indices(bad)
    with pytest.raises(ValueError):
        MoGe2Encoder(backbone, [0, 5], 4)
    with pytest.raises(ValueError, match="divisible"):
        DinoVisionTransformer(10, 1, 3)
    with pytest.raises(ValueError, match="token grid"):
        MoGe2Encoder(backbone, 1, 4)(torch.rand(1, 3, 28, 28), 0, 2)
