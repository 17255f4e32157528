"""Tiny PPVD training (training/video_*.py): a few steps on 2 tiny clips, resume, official-format files."""
import json

import numpy as np
import pytest
import torch

from pixel_perfect_ros.inference.checkpoints import load_pi3_semantics, load_ppvd_dit
from pixel_perfect_ros.inference.video_pipeline import PixelPerfectVideoDepth
from pixel_perfect_ros.model.semantics import MoGe2Semantics
from pixel_perfect_ros.training.baseline import EncoderConfig
from pixel_perfect_ros.training.resumable import LoopConfig
from pixel_perfect_ros.training.train import save_semantics_checkpoint
from pixel_perfect_ros.training.video_data import load_clip_set, sample_window
from pixel_perfect_ros.training.video_semantics import PI3_FILE, Pi3TrainConfig
from pixel_perfect_ros.tools.train import build_parser
from pixel_perfect_ros.training.video_train import (PPVD_FILE, VideoDiTTrainConfig, VideoRun, export_best,
                                                    train_video, train_video_dit, window_flow_target)

SIZE = 32
DIT = VideoDiTTrainConfig(input_size=SIZE, hidden_size=16, num_heads=2, steps=4, finetune_steps=2, max_frames=5,
                          validation_windows=1)
PI3 = Pi3TrainConfig(decoder_depth=2, steps=2, max_frames=5, validation_windows=1)
LOOP = LoopConfig(log_every=1, validate_every=2, save_every=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Both stages on 2 tiny clips of 8 frames; returns (out folder, clips, pi3, moge2 file)."""
    root = tmp_path_factory.mktemp("video_run")
    moge2 = root / "moge2.pt"
    encoder = EncoderConfig()
    save_semantics_checkpoint(MoGe2Semantics.from_config(encoder.to_moge2()), encoder, moge2)
    clips = load_clip_set(root / "clips", [0, 1], 8, 24, 32, SIZE)
    out = root / "out"
    pi3, _ = train_video(clips, clips, moge2, out, PI3, DIT, LOOP, LOOP)
    return out, clips, pi3, moge2


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_both_stages_log_finite_losses_and_validation(run):
    out = run[0]
    for name, steps in (("pi3", PI3.steps), ("ppvd", DIT.steps)):
        log = _log(out / f"{name}_log.jsonl")
        assert [r["step"] for r in log] == list(range(1, steps + 1))
        assert all(np.isfinite(r["loss"]) for r in log)
        assert all(np.isfinite(r["val"]) for r in log if r["step"] % 2 == 0)
    assert "grad" in _log(out / "ppvd_log.jsonl")[-1]["parts"]  # the fine-tune steps add the gradient loss


def test_resume_goes_on_from_the_saved_step(run):
    out, clips, pi3, _ = run
    train_video_dit(clips, clips, pi3, out, VideoDiTTrainConfig(**{**DIT.__dict__, "steps": 6}), LOOP)
    assert [r["step"] for r in _log(out / "ppvd_log.jsonl")] == list(range(1, 7))  # 5 and 6 only added
    assert torch.load(out / "ppvd_state.pt", weights_only=True)["step"] == 6


def test_files_load_through_the_official_loaders_and_predict(run):
    out = run[0]
    dit, pi3 = load_ppvd_dit(out / PPVD_FILE), load_pi3_semantics(out / PI3_FILE)
    assert (dit.input_size, dit.semantics_dim) == (SIZE, pi3.out_dim) == (SIZE, 2 * 192)
    stored = torch.load(out / PPVD_FILE, weights_only=True)  # tied adaLN weights: one tensor, stored once
    key = "dit_video.{}.adaLN_modulation.1.weight"
    assert stored[key.format("blocks.0")].data_ptr() == stored[key.format("temporal_blocks.2")].data_ptr()
    torch.testing.assert_close(dit.blocks[5].adaLN_modulation[1].weight, dit.blocks[0].adaLN_modulation[1].weight)
    model = PixelPerfectVideoDepth.from_checkpoints(out / PPVD_FILE, out / PI3_FILE, steps=1)
    frames = np.random.default_rng(0).integers(0, 256, (5, 24, 32, 3), dtype=np.uint8)
    depth = model(frames).depth
    assert depth.shape == (5, 24, 32) and np.isfinite(depth).all()


def test_export_best_rewrites_the_files_from_the_best_weights(run):
    out, _, _, moge2 = run
    (out / PPVD_FILE).unlink()
    report = export_best(VideoRun(out=out, cache=out, clips=2, pi3=PI3, dit=DIT, moge2=moge2))
    assert load_ppvd_dit(out / PPVD_FILE).pos_embed.shape[-1] == DIT.hidden_size
    assert report["ppvd"]["best_step"] in range(1, 7) and report["ppvd"]["parameters"] > 0


def test_cli_accepts_video_and_keeps_training_clips_below_the_validation_seeds(tmp_path):
    args = build_parser().parse_args(["--video", "400", "--out", "x", "--video-steps", "10", "--finetune-steps", "2"])
    assert (args.video, args.video_steps, args.input_size) == (400, 10, 64)
    with pytest.raises(ValueError, match="at most 990"):
        VideoRun(out=tmp_path, cache=tmp_path, clips=991)


def test_window_target_shares_one_normalisation():
    depth = torch.stack([torch.full((4, 4), 2.0), torch.full((4, 4), 8.0)])  # (2, 4, 4) a near and a far frame
    x0, mask = window_flow_target(depth)
    assert mask.all() and x0[0].max() < x0[1].min()  # per-frame normalisation would make both frames equal


def test_windows_are_first_windows_or_references_then_new_frames():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        frames = sample_window(24, 6, generator)
        assert len(frames) == 6 and frames == sorted(set(frames)) and frames[-1] < 24
        assert frames[3:] == list(range(frames[3], frames[3] + 3))
