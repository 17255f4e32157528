"""PPVD windowing, video pre/post-processing and cross-window alignment (PPD_SPEC 3.1, 3.2, 3.5).

A clip of ``L`` frames is cut into windows of 16 frames. Window 0 holds frames 0..15; every later
window carries 3 reference frames (the first video frame and frames 8 and 15 of the previous window)
and 13 new frames. The clip is padded by repeating its last frame so the windows tile it exactly.
Each window's depth is later brought onto window 0's scale by a least-squares scale and shift fitted
on the 3 reference frames (``align_video_depth``).

Deliberate deviation: the official code pads clips of 1..3 frames to 3 frames, gets zero windows and
crashes in the alignment. Here every clip is padded to at least one window of 16 frames (repeating the
last frame), so short clips give one window and the first ``L`` output frames are kept.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import image_to_tensor, resize_depth

WINDOW = 16
"""Frames per window (official ``INFER_LEN``)."""

KEYFRAMES = (0, 8, 15)
"""Slots of a window whose frames are carried into the next window as references."""

OVERLAP = 3
"""Reference slots at the start of every window after the first (``len(KEYFRAMES)``)."""

STRIDE = WINDOW - OVERLAP
"""New frames per window after the first (13)."""

VIDEO_SIZE = 512
"""PPVD runs every frame at 512x512 (aspect ratio not preserved)."""


def padded_length(num_frames: int) -> int:
    """Length of the clip after padding with copies of its last frame.

    Official rule: append ``13 - R`` frames when ``R = (L - 16) mod 13`` is non-zero, then at least
    16 frames (the official code keeps 3 for L <= 3 and crashes; see the module docstring).

    Raises:
        ValueError: if ``num_frames`` < 1.
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    remainder = (num_frames - WINDOW) % STRIDE
    padded = num_frames if remainder == 0 else num_frames + STRIDE - remainder
    return max(WINDOW, padded)


def num_windows(num_frames: int) -> int:
    """Number of PPVD windows for a clip of ``num_frames`` frames (K)."""
    return (padded_length(num_frames) - WINDOW) // STRIDE + 1


def window_slots(num_frames: int) -> list[list[int]]:
    """Video-frame index in every slot of every window, as the official ``forward_test`` builds them.

    Window k takes padded frames ``[13k, 13k + 16)``; for k >= 1 its slots 0..2 are replaced by the
    previous window's slots 0, 8, 15. Padding frames map to the last video frame (``L - 1``).

    Returns:
        K lists of 16 ints in [0, num_frames).
    """
    last = num_frames - 1
    windows: list[list[int]] = []
    for k in range(num_windows(num_frames)):
        slots = [min(i, last) for i in range(STRIDE * k, STRIDE * k + WINDOW)]
        if windows:
            slots[:OVERLAP] = [windows[-1][i] for i in KEYFRAMES]
        windows.append(slots)
    return windows


def to_network_input(frames_rgb: np.ndarray, bgr_quirk: bool = True, size: int = VIDEO_SIZE) -> torch.Tensor:
    """Video frames -> PPVD network input: [0, 1] floats resized to ``size`` x ``size`` (official 512).

    The official ``run_video.py`` reads frames as RGB, then ``video2tensor`` applies ``BGR2RGB`` again,
    so the official network (and Pi3) receive B,G,R channel order. Keep ``bgr_quirk=True`` for the
    official checkpoints; ``False`` feeds true RGB.

    Per frame: divide by 255 (float64, then float32, as ``image_to_tensor``), then bilinear resize to
    ``size`` x ``size`` (``align_corners=False``, no antialias).

    Args:
        frames_rgb: (L, H0, W0, 3) uint8 RGB.
        bgr_quirk: reverse the channels as the official pipeline does.
        size: the DiT's input size (512 for the official weights; small test models use less).

    Returns:
        (L, 3, size, size) float32 in [0, 1], channel order B,G,R if ``bgr_quirk`` else R,G,B.

    Raises:
        ValueError: if ``frames_rgb`` is not a non-empty (L, H0, W0, 3) uint8 array.
    """
    if not isinstance(frames_rgb, np.ndarray) or frames_rgb.ndim != 4 or len(frames_rgb) == 0:
        desc = f"{frames_rgb.dtype} {frames_rgb.shape}" if isinstance(frames_rgb, np.ndarray) else type(frames_rgb)
        raise ValueError(f"expected video frames as a (L, H, W, 3) uint8 array, got {desc}")
    resized = []
    for frame in frames_rgb:  # one frame at a time: full-resolution float copies stay small
        image = image_to_tensor(frame[..., ::-1] if bgr_quirk else frame)  # (1, 3, H0, W0)
        resized.append(F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False))
    return torch.cat(resized)


def window_depth_to_original(depth: torch.Tensor, height: int, width: int) -> np.ndarray:
    """One window prediction (16, 1, h, w) -> (16, height, width) float32 numpy, bilinear as official."""
    return resize_depth(depth.float(), height, width)[:, 0].cpu().numpy()


def scale_and_shift(prediction: np.ndarray, target: np.ndarray) -> tuple[np.float32, np.float32]:
    """Closed-form least squares of ``s * prediction + b ~ target`` in float32 (official ``align_vda``).

    Falls back to ``(1, 0)`` when the normal equations are singular (``det == 0``).
    """
    a00 = np.sum(prediction * prediction)
    a01 = np.sum(prediction)
    a11 = np.float32(prediction.size)
    b0 = np.sum(prediction * target)
    b1 = np.sum(target)
    det = a00 * a11 - a01 * a01
    if det == 0:
        return np.float32(1), np.float32(0)
    return (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det


def align_video_depth(windows: list[np.ndarray]) -> np.ndarray:
    """Chain window predictions onto window 0's scale and concatenate their new frames (PPD_SPEC 3.5).

    Window k >= 1 gets the scale/shift that best maps its 3 reference slots onto the reference depths
    (window 0's frame 0, the previous aligned window's slots 8 and 15); the scale may be negative.

    Args:
        windows: K arrays (16, H, W) float32, model output (normalised log-depth), at one resolution.

    Returns:
        (16 + 13 (K - 1), H, W) float32; padded frames included (keep the first L).

    Raises:
        ValueError: for no windows or windows of a shape other than (16, H, W) of window 0.
    """
    if not windows:
        raise ValueError("align_video_depth needs at least one window")
    first = np.asarray(windows[0], dtype=np.float32)
    if first.ndim != 3 or first.shape[0] != WINDOW:
        raise ValueError(f"windows must be ({WINDOW}, H, W), got {first.shape}")
    out = [first]
    refs = [first[i] for i in KEYFRAMES]
    for window in windows[1:]:
        window = np.asarray(window, dtype=np.float32)
        if window.shape != first.shape:
            raise ValueError(f"window shape {window.shape} differs from window 0's {first.shape}")
        scale, shift = scale_and_shift(np.concatenate(window[:OVERLAP]), np.concatenate(refs))
        aligned = window * scale + shift  # (16, H, W)
        out.append(aligned[OVERLAP:])
        refs = [refs[0]] + [aligned[i] for i in KEYFRAMES[1:]]
    return np.concatenate(out)
