"""The bundled tiny video model (a PPVD trained on the synthetic world) as the default of the video tools.

The first test points ``inference/bundled.py`` at tiny random video models in the official formats (the
tool's default, whatever the shipped files hold); the others run on the shipped files in
pixel_perfect_ros/data/bundled/. The accuracy test scores held-out clips (``make_clip`` seeds >= 1000;
training used 0..999) after one RANSAC alignment per clip (``evaluation.temporal.score_clip``); its
thresholds are the measured values with a margin, so a change that degrades the model, its loading or the
video pipeline fails here.
"""
import cv2
import numpy as np
from checkpoint_files import write_video_checkpoints

from pixel_perfect_ros.evaluation.temporal import score_clip
from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.inference.checkpoints import load_pi3_semantics, load_ppvd_dit
from pixel_perfect_ros.inference.loader import BUNDLED_VIDEO_WARNING, ModelRequest, load_model
from pixel_perfect_ros.synthetic import make_clip
from pixel_perfect_ros.tools import infer_video

HELD_OUT_SEEDS = (1000, 1001, 1002)
# Measured on these 16-frame 128x96 clips (2026-12-06, the files of 06:35): AbsRel 0.246 / 0.154 / 0.430
# (mean 0.277), delta1 0.589 / 0.738 / 0.460 (mean 0.596); a constant prediction scores 0.81 / 0.28.
MAX_ABS_REL = 0.32
MIN_DELTA1 = 0.54


def write_frames(folder, rgb: np.ndarray):
    """``rgb`` (L, H, W, 3) uint8 as PNG files 000.png, 001.png, ... in a new ``folder``; returns it."""
    folder.mkdir()
    for i, frame in enumerate(rgb):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def test_ppd_infer_video_without_files_runs_the_bundled_video_model(tmp_path, monkeypatch, capsys):
    ppvd, pi3 = write_video_checkpoints(tmp_path)  # tiny random models standing in for the shipped files
    monkeypatch.setattr(bundled, "VIDEO_CHECKPOINT", ppvd)
    monkeypatch.setattr(bundled, "VIDEO_SEMANTICS", pi3)
    frames = write_frames(tmp_path / "clip", make_clip(seed=0, n_frames=3, height=48, width=64, supersample=1).rgb)

    assert infer_video.main([str(frames), "--out", str(tmp_path / "default"), "--steps", "1"]) == 0
    assert BUNDLED_VIDEO_WARNING in capsys.readouterr().err
    assert infer_video.main([str(frames), "--checkpoint", str(ppvd), "--semantics", str(pi3),
                             "--out", str(tmp_path / "given"), "--steps", "1"]) == 0
    assert BUNDLED_VIDEO_WARNING not in capsys.readouterr().err
    default = np.load(tmp_path / "default" / "clip_depth.npz")["depth"]
    assert default.shape == (3, 48, 64)
    np.testing.assert_array_equal(default, np.load(tmp_path / "given" / "clip_depth.npz")["depth"])


def test_the_shipped_files_are_in_the_official_formats():
    dit = load_ppvd_dit(bundled.VIDEO_CHECKPOINT)
    load_pi3_semantics(bundled.VIDEO_SEMANTICS)
    assert dit.input_size % 16 == 0


def test_the_shipped_video_model_is_the_default_and_keeps_its_measured_accuracy():
    loaded = load_model(ModelRequest(video=True))
    assert loaded.name == "bundled ppvd.pth + pi3.safetensors (pi3)" and loaded.warnings == (BUNDLED_VIDEO_WARNING,)
    scores = []
    for seed in HELD_OUT_SEEDS:
        clip = make_clip(seed=seed, n_frames=16, height=96, width=128)
        scores.append(score_clip(loaded.model(clip.rgb).depth, clip.depth, clip.T_world_from_cam, clip.K, ()))
    abs_rel, delta_1 = np.mean([(s.abs_rel, s.delta_1) for s in scores], axis=0)
    assert abs_rel < MAX_ABS_REL and delta_1 > MIN_DELTA1, scores
