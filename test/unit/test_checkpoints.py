"""Strict loading of the official checkpoint formats, with small random-weight files."""
import argparse

import pytest
import torch
from checkpoint_files import TINY_DIT, write_da2_checkpoint, write_moge2_checkpoint, write_ppd_checkpoint

from pixel_perfect_ros.inference.checkpoints import (
    CheckpointError,
    download_instructions,
    load_da2_semantics,
    load_moge2_semantics,
    load_ppd_dit,
    load_semantics_encoder,
)


def test_ppd_checkpoint_loads_every_tensor(tmp_path):
    state = write_ppd_checkpoint(tmp_path / "ppd.pth", depth=4)
    dit = load_ppd_dit(tmp_path / "ppd.pth")
    assert (dit.hidden_size, len(dit.blocks), dit.num_heads) == (TINY_DIT["hidden_size"], 4, TINY_DIT["num_heads"])
    loaded = dit.state_dict()
    assert set(loaded) == {k.removeprefix("dit.") for k in state}
    for key, value in state.items():
        assert torch.equal(loaded[key.removeprefix("dit.")], value), key


def test_ppd_semantics_encoder_keys_are_ignored_on_purpose(tmp_path):
    state = write_ppd_checkpoint(tmp_path / "ppd.pth")
    state["sem_encoder.pretrained.cls_token"] = torch.zeros(1, 1, 64)
    torch.save(state, tmp_path / "ppd.pth")
    load_ppd_dit(tmp_path / "ppd.pth")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("dit.blocks.1.mlp.fc2.bias"), r"missing: blocks\.1\.mlp\.fc2\.bias"),
        (lambda s: s.update({"dit.extra.weight": torch.zeros(2)}), r"unexpected: extra\.weight"),
        (lambda s: s.update({"dit.final_layer.linear.bias": torch.zeros(3)}),
         r"wrong shape: final_layer\.linear\.bias \(3,\) \(expected \(64,\)\)"),
        (lambda s: s.update({"pipeline.dit.x": torch.zeros(1)}), r"unexpected: pipeline\.dit\.x"),
    ],
)
def test_ppd_mismatch_names_keys_and_file(tmp_path, edit, message):
    state = write_ppd_checkpoint(tmp_path / "ppd.pth")
    edit(state)
    torch.save(state, tmp_path / "ppd.pth")
    with pytest.raises(CheckpointError, match=message) as info:
        load_ppd_dit(tmp_path / "ppd.pth")
    assert str(tmp_path / "ppd.pth") in str(info.value)


def test_wrong_prefix_is_an_error_not_a_random_dit(tmp_path):
    state = write_ppd_checkpoint(tmp_path / "ppd.pth")
    torch.save({k.removeprefix("dit."): v for k, v in state.items()}, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match=r"no 'dit\.\*' keys"):
        load_ppd_dit(tmp_path / "bare.pth")


def test_da2_loads_backbone_and_ignores_depth_head(tmp_path):
    state = write_da2_checkpoint(tmp_path / "da2.pth")
    encoder = load_da2_semantics(tmp_path / "da2.pth")
    loaded = encoder.state_dict()
    assert set(state) - set(loaded) == {"depth_head.scratch.output_conv2.0.weight"}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


def test_da2_of_unknown_size_is_rejected(tmp_path):
    torch.save({"pretrained.pos_embed": torch.zeros(1, 1370, 48), "pretrained.blocks.0.ls1.gamma": torch.zeros(48)},
               tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="no known DINOv2 architecture with width 48, 1 blocks"):
        load_da2_semantics(tmp_path / "odd.pth")


def test_moge2_loads_encoder_and_ignores_heads(tmp_path):
    ckpt = write_moge2_checkpoint(tmp_path / "moge2.pt")
    encoder = load_semantics_encoder(tmp_path / "moge2.pt", "moge2")
    loaded = encoder.state_dict()
    ignored = set(ckpt["model"]) - set(loaded)
    assert ignored and all(k.split(".")[0] in ("neck", "points_head", "normal_head", "mask_head", "scale_head")
                           for k in ignored)
    assert all(torch.equal(loaded[k], ckpt["model"][k]) for k in loaded)


def test_moge2_needs_its_config(tmp_path):
    ckpt = write_moge2_checkpoint(tmp_path / "moge2.pt")
    torch.save(ckpt["model"], tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="expected the entries 'model_config' and 'model'"):
        load_moge2_semantics(tmp_path / "bare.pt")
    ckpt["model_config"] = {"encoder": {"backbone": "dinov2_vitq14", "intermediate_layers": [0], "dim_out": 8}}
    torch.save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="unknown DINOv2 backbone 'dinov2_vitq14'"):
        load_moge2_semantics(tmp_path / "odd.pt")


def test_semantics_checkpoint_of_the_other_type_is_rejected(tiny_checkpoints):
    with pytest.raises(CheckpointError, match="not a MoGe-2 model.pt"):
        load_semantics_encoder(tiny_checkpoints["da2"], "moge2")
    with pytest.raises(CheckpointError, match="not a Depth Anything v2 checkpoint"):
        load_semantics_encoder(tiny_checkpoints["moge2"], "da2")
    with pytest.raises(CheckpointError, match="not a PPD checkpoint"):
        load_ppd_dit(tiny_checkpoints["da2"])
    with pytest.raises(ValueError, match="semantics_type must be one of"):
        load_semantics_encoder(tiny_checkpoints["da2"], "dino")


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_ppd_dit(tmp_path / "notes.pth")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_ppd_dit(tmp_path / "absent.pth")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"dit.x": argparse.Namespace(a=1)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_ppd_dit(tmp_path / "evil.pth")


def test_download_instructions_name_every_official_file():
    text = download_instructions("ckpts")
    for name in ("ppd.pth", "depth_anything_v2_vitl.pth", "ppd_moge.pth", "moge2.pt", "ckpts/"):
        assert name in text
