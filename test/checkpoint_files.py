"""Small random-weight checkpoints written in the official formats (``ppd.pth``,
``depth_anything_v2_vitl.pth``, MoGe-2 ``model.pt``, ``ppvd.pth``, Pi3 ``model.safetensors``), for tests."""
from pathlib import Path

import safetensors.torch
import torch

from pixel_perfect_ros.model.dinov2 import DINOV2_ARCHITECTURES
from pixel_perfect_ros.model.dit import DiT
from pixel_perfect_ros.model.moge2 import MoGe2Model
from pixel_perfect_ros.model.random_weights import randomize_, tiny_video_models  # noqa: F401 (re-exported for tests)
from pixel_perfect_ros.model.semantics import DepthAnythingV2Semantics

# Test-only DINOv2 sizes, registered by name the way the official MoGe-2 fixtures registered theirs.
TINY_VIT = "dinov2_vitt14_test"
"""64 wide: MoGe-2 projects it to the DiT's 1024-wide semantics."""
DA2_TEST_VIT = "dinov2_vitl14_1block_test"
"""1024 wide like ViT-L (DA2 tokens feed the DiT unprojected), one block, MLP ratio 1: a 33 MB file."""
DINOV2_ARCHITECTURES.setdefault(TINY_VIT, dict(embed_dim=64, depth=2, num_heads=4))
DINOV2_ARCHITECTURES.setdefault(DA2_TEST_VIT, dict(embed_dim=1024, depth=1, num_heads=16, mlp_ratio=1.0))
TINY_DIT = dict(hidden_size=64, depth=2, num_heads=4)
_LEVELS = dict(res_block_in_norm="none", res_block_hidden_norm="none",
               resamplers=["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"])
_WIDTHS = [16, 12, 8, 8, 4]


def _head(outputs: int) -> dict:
    return dict(dim_in=_WIDTHS, dim_out=[None] * 4 + [outputs], dim_res_blocks=_WIDTHS, num_res_blocks=[0, 1, 1, 1, 0],
                **_LEVELS)


TINY_MOGE2_CONFIG = {
    # dim_out 1024: the width PPD's DiT takes as semantics; everything after the encoder is tiny.
    "encoder": {"backbone": TINY_VIT, "intermediate_layers": [0, 1], "dim_out": 1024},
    "neck": dict(dim_in=[1026, 2, 2, 2, 2], dim_out=None, dim_res_blocks=_WIDTHS, num_res_blocks=[0, 1, 1, 1, 0],
                 **_LEVELS),
    "points_head": _head(3), "normal_head": _head(3), "mask_head": _head(1),
    "scale_head": {"dims": [64, 16, 1]},
    "remap_output": "exp", "num_tokens_range": [1200, 3600],
}


def write_video_checkpoints(root: Path, models: tuple | None = None) -> tuple[Path, Path]:
    """Save ``models`` ((VideoDiT, Pi3Semantics); default: ``tiny_video_models()``) as ``root/ppvd.pth`` (flat
    dict, ``dit_video.*`` keys) and ``root/pi3.safetensors`` (Pi3's own keys); returns the two paths."""
    dit, pi3 = models or tiny_video_models()
    ppvd_path, pi3_path = Path(root) / "ppvd.pth", Path(root) / "pi3.safetensors"
    torch.save({f"dit_video.{k}": v for k, v in dit.state_dict().items()}, ppvd_path)
    safetensors.torch.save_file({k: v.contiguous() for k, v in pi3.state_dict().items()}, pi3_path)
    return ppvd_path, pi3_path


def write_ppd_checkpoint(path: Path, seed: int = 0, **dit_kwargs) -> dict:
    """Save a random DiT as an official ``ppd.pth`` (flat dict, ``dit.*`` keys); returns the dict."""
    state = {f"dit.{k}": v for k, v in randomize_(DiT(**{**TINY_DIT, **dit_kwargs}), seed).state_dict().items()}
    torch.save(state, path)
    return state


def write_da2_checkpoint(path: Path, seed: int = 1) -> dict:
    """Save a random tiny DINOv2 as ``depth_anything_v2_vitl.pth`` (``pretrained.*`` + a ``depth_head.*``)."""
    state = randomize_(DepthAnythingV2Semantics.from_backbone_name(DA2_TEST_VIT), seed).state_dict()
    state["depth_head.scratch.output_conv2.0.weight"] = torch.zeros(1, 32, 3, 3)
    torch.save(state, path)
    return state


def write_moge2_checkpoint(path: Path, seed: int = 2) -> dict:
    """Save a random tiny MoGe-2 (encoder, neck, heads, scale head) as ``model.pt`` (``{'model_config', 'model'}``)."""
    model = randomize_(MoGe2Model.from_config(TINY_MOGE2_CONFIG), seed)
    with torch.no_grad():
        model.mask_head.output_blocks[-1].bias.fill_(3.0)  # most pixels valid (sigmoid > 0.5)
    ckpt = {"model_config": TINY_MOGE2_CONFIG, "model": dict(model.state_dict())}
    torch.save(ckpt, path)
    return ckpt


def assert_matches_manifest(module: torch.nn.Module, entries: dict) -> None:
    """``module``'s state dict has exactly the manifest's keys (an official ``*_manifest.json``'s "keys"),
    each with its shape, dtype and kind (parameter or buffer)."""
    state = module.state_dict()
    assert set(state) == set(entries)
    parameters = dict(module.named_parameters())
    for key, entry in entries.items():
        assert list(state[key].shape) == entry["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == entry["dtype"], key
        assert (key in parameters) == (entry["kind"] == "parameter"), key
