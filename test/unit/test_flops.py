"""inference/flops.py: the counts of notes/acceleration.md for the official architecture, from modules on
the meta device or from configs (no weights allocated); device peaks by name."""
import pytest
import torch

from pixel_perfect_ros.inference import flops
from pixel_perfect_ros.model.dinov2 import dinov2_from_name
from pixel_perfect_ros.model.dit import DiT
from pixel_perfect_ros.model.semantics import DepthAnythingV2Semantics, MoGe2Encoder, MoGe2Semantics

T = 1e12


@pytest.fixture(scope="module")
def official():
    """DiT() and the DA2 ViT-L encoder on the meta device."""
    with torch.device("meta"):
        return DiT(), DepthAnythingV2Semantics.from_backbone_name("dinov2_vitl14")


def test_dit_forward_at_1024x768(official):
    dit, _ = official
    parts = flops.dit_forward_parts(dit, 768, 1024)
    assert parts.total / T == pytest.approx(12.79, rel=0.01)
    assert parts.fine_attention / T == pytest.approx(7.4, rel=0.01)  # 4 N^2 D x 12 blocks, N = 12288
    assert parts.attention / parts.total == pytest.approx(0.62, abs=0.01)  # attention, both stages
    assert parts.fine_linear == 12 * 24 * 1024 ** 2 * 12288  # 24 D^2 per token per block
    assert parts.other / parts.total < 0.025  # patch embed + fusion + final layer
    # the module and its constructor kwargs (defaults filled in) give the same count
    assert flops.dit_forward_flops({}, 768, 1024) == parts.total
    assert flops.dit_forward_flops({"hidden_size": 1024, "depth": 24}, 768, 1024) == parts.total


def test_vit_l_at_896x672(official):
    _, encoder = official
    assert flops.vit_flops("dinov2_vitl14", 48, 64) / T == pytest.approx(2.79, rel=0.01)  # 3073 tokens
    assert flops.semantics_flops(encoder, 768, 1024) == flops.vit_flops("dinov2_vitl14", 48, 64)
    assert flops.vit_flops(encoder.pretrained, 48, 64) == flops.vit_flops("dinov2_vitl14", 48, 64)


def test_per_image(official):
    dit, encoder = official
    assert flops.ppd_image_flops(dit, encoder, 768, 1024, 4) / T == pytest.approx(53.9, rel=0.01)
    assert flops.ppd_image_flops(dit, encoder, 512, 512, 4) / T == pytest.approx(10.8, rel=0.01)
    assert flops.ppd_image_flops({}, "dinov2_vitl14", 512, 512, 4) == flops.ppd_image_flops(dit, encoder, 512, 512, 4)
    one, four = (flops.ppd_image_flops(dit, encoder, 768, 1024, s) for s in (1, 4))
    assert four - one == 3 * flops.dit_forward_flops(dit, 768, 1024)


def test_moge2_encoder_counts_blocks_up_to_its_last_layer_and_projections():
    with torch.device("meta"):
        encoder = MoGe2Semantics(MoGe2Encoder(dinov2_from_name("ppr_vitt14"), [1, 3], 1024))
    rows, cols = 6, 8
    backbone = flops.vit_flops("ppr_vitt14", rows, cols, blocks=4)
    assert flops.semantics_flops(encoder, 16 * rows, 16 * cols) == backbone + 2 * 2 * rows * cols * 192 * 1024


def test_rejects_sizes_off_the_coarse_grid():
    with pytest.raises(ValueError, match="multiples of 16"):
        flops.dit_forward_flops({}, 760, 1024)
    with pytest.raises(ValueError, match="unknown DiT config"):
        flops.dit_forward_flops({"width": 3}, 768, 1024)


@pytest.mark.parametrize("name, sms, key", [
    ("NVIDIA H100 80GB HBM3", 132, "H100 SXM"), ("NVIDIA H100 PCIe", 114, "H100 PCIe"), ("NVIDIA H200", 132, "H200"),
    ("NVIDIA GeForce RTX 4090", 128, "RTX 4090"), ("Orin", 16, "AGX Orin"), ("Orin", 8, "Orin Nano"),
    ("NVIDIA GeForce GTX 1080", 20, None),
])
def test_peak_key(name, sms, key):
    assert flops.peak_key(name, sms) == key


def test_table_peaks():
    assert flops.table_peak("NVIDIA H100 80GB HBM3", "bf16").tflops == 989.0
    assert flops.table_peak("NVIDIA H200", "fp16").tflops == 989.0
    assert flops.table_peak("NVIDIA GeForce RTX 4090", "fp16").tflops == pytest.approx(165, rel=0.01)
    assert flops.table_peak("Orin", "fp16", 16).tflops == 42.5
    assert 10 <= flops.table_peak("Orin", "fp16", 8).tflops <= 17
    assert flops.table_peak("Orin", "fp32", 8).tflops is None
    assert flops.table_peak("NVIDIA GeForce GTX 1080", "fp16").tflops is None


def test_fp32_peak_follows_torch_matmul_precision():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert flops.table_peak("NVIDIA H100 80GB HBM3", "fp32") == flops.Peak(66.9, "H100 SXM fp32 datasheet")
        torch.set_float32_matmul_precision("high")
        assert flops.table_peak("NVIDIA H100 80GB HBM3", "fp32") == flops.Peak(494.7, "H100 SXM tf32 datasheet")
    finally:
        torch.set_float32_matmul_precision(before)


def test_cpu_peak_is_measured():
    peak = flops.device_peak("cpu", "fp32", matmul_size=128)
    assert peak.tflops > 0 and peak.label.startswith("measured fp32 matmul 128^3")
