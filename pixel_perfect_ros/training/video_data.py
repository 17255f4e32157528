"""Training clips of the tiny PPVD: rendered once, cached as npz, loaded at the network's square size.

A clip's seed fixes its frames and its cut (about a third of the clips cut to another room once), so a
cache folder can be deleted and rebuilt identically. Training seeds are 0..999; held-out ones >= 1000.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.video_windows import to_network_input
from ..synthetic import make_clip

CUT_PROBABILITY = 1 / 3
"""Share of the clips with one cut to another room."""


def clip_cuts(seed: int, n_frames: int) -> tuple[int, ...]:
    """The cut frames of clip ``seed``: () or one frame in [n/3, n - 3) (deterministic)."""
    rng = np.random.default_rng([seed, 7])
    if n_frames < 9 or rng.random() >= CUT_PROBABILITY:
        return ()
    return (int(rng.integers(n_frames // 3, n_frames - 3)),)


def cached_clip(folder: Path, seed: int, n_frames: int, height: int, width: int) -> dict[str, np.ndarray]:
    """Clip ``seed`` from ``folder`` (``clip_<seed>.npz``), rendered and written first if missing.

    Returns:
        ``rgb`` (N, H, W, 3) uint8, ``depth`` (N, H, W) float32 metres (NaN = no hit).
    """
    path = Path(folder) / f"clip_{seed:05d}_{n_frames}_{width}x{height}.npz"
    if not path.is_file():
        clip = make_clip(seed, n_frames, height, width, clip_cuts(seed, n_frames))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, rgb=clip.rgb, depth=clip.depth)
        tmp.replace(path)  # atomic: a killed render leaves no half file
    with np.load(path) as data:
        return {"rgb": data["rgb"], "depth": data["depth"]}


@dataclass(frozen=True)
class ClipSet:
    """Clips at the network's square size.

    Attributes:
        images: (C, N, 3, S, S) float32 in [0, 1], channel order as the video pipeline feeds them.
        depth: (C, N, S, S) float32 metres, nearest-resized (no mixed depths), NaN = invalid.
    """

    images: torch.Tensor
    depth: torch.Tensor


def load_clip_set(folder: Path, seeds, n_frames: int, height: int, width: int, size: int,
                  bgr_quirk: bool = True) -> ClipSet:
    """Render or read clips ``seeds`` and bring them to ``size`` x ``size`` as ``PixelPerfectVideoDepth``
    does (``to_network_input``: bilinear, aspect not kept); depth nearest-resized. A seed whose room has
    no collision-free camera arc (``make_clip`` raises RuntimeError) is skipped."""
    images, depths = [], []
    for seed in seeds:
        try:
            clip = cached_clip(folder, seed, n_frames, height, width)
        except RuntimeError:
            continue
        images.append(to_network_input(clip["rgb"], bgr_quirk, size))
        depth = torch.from_numpy(clip["depth"]).unsqueeze(1)  # (N, 1, H, W)
        depths.append(F.interpolate(depth, size=(size, size), mode="nearest-exact")[:, 0])
    return ClipSet(torch.stack(images), torch.stack(depths))


def sample_window(n_frames: int, length: int, generator: torch.Generator) -> list[int]:
    """Frame indices of one training window of ``length`` frames (>= 4) from a clip of ``n_frames``.

    Half the windows are consecutive frames (a first window: its frames 0..2 are the references);
    the others are 3 earlier reference frames, ascending, the last at most 8 frames before the new ones,
    then ``length - 3`` consecutive new frames (a later window of ``window`` mode: first video frame,
    frames 8 and 15 of the previous window; or a stream's cache: anchor, 2 keyframes + K new frames).

    Raises:
        ValueError: if ``length < 4`` or ``length > n_frames``.
    """
    if not 4 <= length <= n_frames:
        raise ValueError(f"window length must be in [4, n_frames={n_frames}], got {length}")

    def uniform(lo: int, hi: int) -> int:  # integer in [lo, hi]
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    if torch.rand(1, generator=generator).item() < 0.5:
        start = uniform(0, n_frames - length)
        return list(range(start, start + length))
    new = length - 3
    first_new = uniform(3, n_frames - new)
    r2 = uniform(max(2, first_new - 8), first_new - 1)
    r1 = uniform(1, r2 - 1)
    r0 = uniform(0, r1 - 1)
    return [r0, r1, r2, *range(first_new, first_new + new)]
