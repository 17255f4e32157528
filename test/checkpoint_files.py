"""Small random-weight checkpoints written in the official formats (``ppd.pth``,
``depth_anything_v2_vitl.pth``, MoGe-2 ``model.pt``), for tests."""
from pathlib import Path

import torch

from pixel_perfect_ros.model.dinov2 import DINOV2_ARCHITECTURES
from pixel_perfect_ros.model.dit import DiT
from pixel_perfect_ros.model.semantics import DepthAnythingV2Semantics, MoGe2Semantics

# Test-only DINOv2 sizes, registered by name the way the official MoGe-2 fixtures registered theirs.
TINY_VIT = "dinov2_vitt14_test"
"""64 wide: MoGe-2 projects it to the DiT's 1024-wide semantics."""
DA2_TEST_VIT = "dinov2_vitl14_1block_test"
"""1024 wide like ViT-L (DA2 tokens feed the DiT unprojected), one block, MLP ratio 1: a 33 MB file."""
DINOV2_ARCHITECTURES.setdefault(TINY_VIT, dict(embed_dim=64, depth=2, num_heads=4))
DINOV2_ARCHITECTURES.setdefault(DA2_TEST_VIT, dict(embed_dim=1024, depth=1, num_heads=16, mlp_ratio=1.0))
TINY_DIT = dict(hidden_size=64, depth=2, num_heads=4)
TINY_MOGE2_CONFIG = {
    "encoder": {"backbone": TINY_VIT, "intermediate_layers": [0, 1], "dim_out": 1024},
    "neck": {"dim_in": [1026, 2], "dim_res_blocks": [1024, 8]},  # carried like the real file, unused here
}


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Overwrite every parameter with seeded random values (the recipe of the official fixtures:
    LayerNorm-like weights 1 + 0.1 N, matrices N / sqrt(fan_in), other vectors 0.1 N)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=generator)
            if p.ndim >= 2:
                p.copy_(r / p[0].numel() ** 0.5)
            elif name.endswith("weight") or name.endswith("gamma"):
                p.copy_(1 + 0.1 * r)
            else:
                p.copy_(0.1 * r)
    return module


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
    """Save a random tiny MoGe-2 encoder as ``model.pt`` (``{'model_config', 'model'}``, + a ``neck.*``)."""
    model = randomize_(MoGe2Semantics.from_config(TINY_MOGE2_CONFIG["encoder"]), seed)
    state = dict(model.state_dict())
    state["neck.0.weight"] = torch.zeros(8, 2, 3, 3)
    ckpt = {"model_config": TINY_MOGE2_CONFIG, "model": state}
    torch.save(ckpt, path)
    return ckpt
