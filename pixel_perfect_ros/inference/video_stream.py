"""Streaming PPVD, mode ``stream_exact``: frames in one at a time, each frame's depth out with its own stamp.

A ``ReferenceCache`` keeps 3 reference frames: the anchor (the first frame, or the frame the stream was
re-anchored on) and the two latest keyframes, each with its network-size image and its aligned prediction.

Per pushed frame:

- Filling (fewer than 3 references): the references so far plus the new frame run as the official first
  window of that short clip (``window_slots``: the last frame repeated to 16); the new frame becomes a
  reference. Frame 0 is thus exactly the official prediction for a 1-frame clip.
- Ready: every group of K new frames (``frames_per_window``) runs as one window [3 references + K new]
  with the first 3 + K frames of the video's shared initial noise; the references are recomputed in every
  window ("exact"). The prediction at the 3 reference slots is fitted to the cached reference predictions
  with ``scale_and_shift`` (as ``align_video_depth``) and the new frames are returned with that fit.
- Promotion: frame i (counted from the anchor, i >= 3) with ``i % keyframe_every == 0`` replaces the
  older keyframe, with its aligned prediction.
- Re-anchoring: a fit with scale <= 0 (depth order inverted) or ``|scale - 1| > max_scale_jump`` (scene
  cut, tracking loss) resets the cache and the group's frames are processed again as a fresh stream.

Fits are solved at the network size (S x S), not at the input size as in ``align_video_depth``; bilinear
resizing is linear, so only the per-pixel weighting differs.

Next: ``stream_cached`` (reusing the references' Pi3 tokens instead of recomputing them) and the ROS node.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .pipeline import DTYPES, sample_depth
from .video_pipeline import PixelPerfectVideoDepth, initial_noise
from .video_windows import (KEYFRAMES, STRIDE, scale_and_shift, to_network_input, window_depth_to_original,
                            window_slots)


@dataclass(frozen=True)
class Reference:
    """One reference frame.

    Attributes:
        image: (3, S, S) float32 network input in [0, 1] (channel order as ``to_network_input``).
        depth: (S, S) float32 aligned normalised log-depth at the network size.
        stamp_ns: the frame's stamp in nanoseconds.
        index: the frame's position in the stream since the anchor (anchor = 0).
    """

    image: torch.Tensor
    depth: np.ndarray
    stamp_ns: int
    index: int


class ReferenceCache:
    """The anchor and the two latest keyframes, in that order."""

    def __init__(self):
        self.entries: list[Reference] = []

    @property
    def state(self) -> str:
        """"empty" (no reference), "filling" (1 or 2) or "ready" (3)."""
        if not self.entries:
            return "empty"
        return "ready" if len(self.entries) == len(KEYFRAMES) else "filling"

    def reset(self) -> None:
        """Forget every reference."""
        self.entries = []

    def promote(self, entry: Reference) -> None:
        """Add ``entry`` as the newest keyframe: appended while filling, else [anchor, previous, entry]."""
        if self.state == "ready":
            self.entries = [self.entries[0], self.entries[2], entry]
        else:
            self.entries.append(entry)

    def images(self) -> torch.Tensor:
        """(R, 3, S, S) float32 reference images."""
        return torch.stack([entry.image for entry in self.entries])

    def depths(self) -> np.ndarray:
        """(R, S, S) float32 aligned reference predictions."""
        return np.stack([entry.depth for entry in self.entries])


@dataclass(frozen=True)
class _Frame:
    """A pushed frame waiting for its window: network input (3, S, S), stamp and input size."""

    image: torch.Tensor
    stamp_ns: int
    height: int
    width: int


class StreamingVideoDepth:
    """PPVD on a stream of frames, mode ``stream_exact`` (see the module docstring).

    Args:
        model: the windowed pipeline whose DiT, Pi3, steps, seed, device, dtype and channel order are used.
        frames_per_window: K new frames per window once the cache is ready, 1..13 (window 3 + K <= 16).
        keyframe_every: promote every N-th frame since the anchor to a keyframe, N >= 1.
        max_scale_jump: re-anchor when a fitted scale is <= 0 or ``|scale - 1| > max_scale_jump``; > 0
            (``math.inf``: re-anchor only on a non-positive scale).

    Attributes:
        cache: the ``ReferenceCache``; ``cache.state`` is the stream's status.
        reanchors: how many times the stream was re-anchored since construction.

    Raises:
        ValueError: for parameters out of range.
    """

    def __init__(self, model: PixelPerfectVideoDepth, frames_per_window: int = 1, keyframe_every: int = 8,
                 max_scale_jump: float = 0.5):
        if not 1 <= frames_per_window <= STRIDE:
            raise ValueError(f"frames_per_window must be in [1, {STRIDE}], got {frames_per_window}")
        if keyframe_every < 1:
            raise ValueError(f"keyframe_every must be >= 1, got {keyframe_every}")
        if not max_scale_jump > 0:
            raise ValueError(f"max_scale_jump must be > 0, got {max_scale_jump}")
        self.model = model
        self.frames_per_window = frames_per_window
        self.keyframe_every = keyframe_every
        self.max_scale_jump = max_scale_jump
        self.cache = ReferenceCache()
        self.noise = initial_noise(model.dit.input_size, model.seed).to(model.device)  # (16, 1, S, S)
        self.pending: list[_Frame] = []
        self.next_index = 0  # stream position of the next frame since the anchor
        self.reanchors = 0

    def reset(self) -> None:
        """Drop the references and any pending frame; the next frame becomes the anchor."""
        self.cache.reset()
        self.pending = []
        self.next_index = 0

    @torch.inference_mode()
    def push(self, frame_rgb: np.ndarray, stamp_ns: int) -> list[tuple[int, np.ndarray]]:
        """Add one frame; return the frames whose depth is now known.

        Args:
            frame_rgb: (H0, W0, 3) uint8 RGB.
            stamp_ns: the frame's stamp in nanoseconds, returned with its depth.

        Returns:
            (stamp_ns, depth) pairs in push order, depth (H0, W0) float32 normalised log-depth on the
            anchor's scale; empty while a group of K frames is incomplete.

        Raises:
            ValueError: if ``frame_rgb`` is not an (H0, W0, 3) uint8 array.
        """
        if not isinstance(frame_rgb, np.ndarray):
            raise ValueError(f"expected one (H, W, 3) uint8 frame, got {type(frame_rgb).__name__}")
        if frame_rgb.ndim != 3 or frame_rgb.shape[-1] != 3 or frame_rgb.dtype != np.uint8:
            desc = f"{frame_rgb.dtype} {frame_rgb.shape}"
            raise ValueError(f"expected one (H, W, 3) uint8 frame, got {desc}")
        image = to_network_input(frame_rgb[None], self.model.bgr_quirk, self.model.dit.input_size)[0]
        self.pending.append(_Frame(image.to(self.model.device), stamp_ns, *frame_rgb.shape[:2]))
        if self.cache.state == "ready" and len(self.pending) < self.frames_per_window:
            return []
        group, self.pending = self.pending, []
        return self._process(group)

    def _process(self, group: list[_Frame]) -> list[tuple[int, np.ndarray]]:
        """Predict, align and publish ``group``: one frame while filling, K frames once ready."""
        if self.cache.state != "ready":
            return [out for frame in group for out in self._fill(frame)]
        depth = self._predict(torch.cat([self.cache.images(), torch.stack([f.image for f in group])]),
                              self.noise[:len(KEYFRAMES) + len(group)])  # (3 + K, 1, S, S)
        aligned = self._align(depth, len(KEYFRAMES))
        if aligned is None:
            self.reanchors += 1
            self.reset()
            return self._process(group)
        return self._publish(group, aligned[len(KEYFRAMES):])

    def _fill(self, frame: _Frame) -> list[tuple[int, np.ndarray]]:
        """The references so far plus ``frame`` as the official first window of that short clip."""
        images = [entry.image for entry in self.cache.entries] + [frame.image]
        slots = window_slots(len(images))[0]  # 16 slots, the last frame repeated
        depth = self._predict(torch.stack([images[i] for i in slots]), self.noise)  # (16, 1, S, S)
        aligned = self._align(depth, len(self.cache.entries))
        if aligned is None:
            self.reanchors += 1
            self.reset()
            return self._fill(frame)
        return self._publish([frame], aligned[len(images) - 1:len(images)])

    def _predict(self, window: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) frames -> (N, 1, S, S) float32 prediction: Pi3 semantics, then the Euler loop."""
        model = self.model
        with torch.autocast(model.device.type, dtype=DTYPES[model.dtype], enabled=model.dtype != "fp32"):
            semantics = model.semantics.forward_semantics(window)  # (N, (S/16)^2, 2048)
            return sample_depth(model.dit, window, semantics, noise, model.timesteps).float()

    def _align(self, depth: torch.Tensor, num_refs: int) -> torch.Tensor | None:
        """Fit the first ``num_refs`` slots of ``depth`` (N, 1, S, S) to the cached references.

        Returns the aligned (N, 1, S, S) prediction, or None when the fit calls for re-anchoring.
        """
        if num_refs == 0:
            return depth
        prediction = depth[:num_refs, 0].cpu().numpy()  # (R, S, S)
        scale, shift = scale_and_shift(prediction, self.cache.depths()[:num_refs])
        if not np.isfinite(scale) or scale <= 0 or abs(scale - 1) > self.max_scale_jump:
            return None
        return depth * float(scale) + float(shift)

    def _publish(self, group: list[_Frame], depth: torch.Tensor) -> list[tuple[int, np.ndarray]]:
        """Promote the group's keyframes and resize its aligned depth (K, 1, S, S) to each input size."""
        out = []
        for frame, frame_depth in zip(group, depth):
            index = self.next_index
            self.next_index += 1
            if self.cache.state != "ready" or index % self.keyframe_every == 0:
                self.cache.promote(Reference(frame.image, frame_depth[0].cpu().numpy(), frame.stamp_ns, index))
            out.append((frame.stamp_ns, window_depth_to_original(frame_depth[None], frame.height, frame.width)[0]))
        return out
