"""Streaming PPVD: frames in one at a time, each frame's depth out with its own stamp.

Two modes (``MODES``) share the reference cache, the filling, promotion and re-anchoring rules below;
they differ once the cache is ready.

A ``ReferenceCache`` keeps 3 reference frames: the anchor (the first frame, or the frame the stream was
re-anchored on) and the two latest keyframes, each with its network-size image and its aligned prediction.

Per pushed frame:

- Filling (fewer than 3 references): the references so far plus the new frame run as the official first
  window of that short clip (``window_slots``: the last frame repeated to 16); the new frame becomes a
  reference. Frame 0 is thus exactly the official prediction for a 1-frame clip.
- Ready, ``stream_exact``: every group of K new frames (``frames_per_window``) runs as one window
  [3 references + K new] with the first 3 + K frames of the video's shared initial noise; the references
  are recomputed in every window ("exact"). The prediction at the 3 reference slots is fitted to the
  cached reference predictions with ``scale_and_shift`` (as ``align_video_depth``) and the new frames
  are returned with that fit.
- Ready, ``stream_cached``: whenever the reference set changes, one reference pass samples the 3
  references alone (noise slots 0..2) with ``VideoDiT.forward_recording``, keeping per Euler step the
  tokens new frames take from them (``ReferenceTokens``) and the fit of its prediction to the cached
  reference predictions. Each group of K new frames then runs alone (noise slots 3..3+K, a DiT batch of
  K) with ``VideoDiT.forward_with_references`` and gets that fit. Pi3: each reference's DINOv2 tokens
  are cached (the encoder is per-frame, so this reuse is exact) and only the decoder runs on
  [3 references + K new]. The approximation ("one-way references"): the references are denoised once
  among themselves - they do not see the new frames, neither in the temporal blocks nor in Pi3's global
  decoder blocks - and their tokens are reused for every later group until the reference set changes;
  the new frames see the references as in a window. Without that cross-frame mixing both modes agree
  (tested). DiT cost per output frame: 1 + 3 / (frames between reference changes) frame-passes instead
  of (3 + K) / K.
- Promotion: frame i (counted from the anchor, i >= 3) with ``i % keyframe_every == 0`` replaces the
  older keyframe, with its aligned prediction.
- Re-anchoring: a fit with scale <= 0 (depth order inverted) or ``|scale - 1| > max_scale_jump`` (scene
  cut, tracking loss) resets the cache and the group's frames are processed again as a fresh stream.

Fits are solved at the network size (S x S), not at the input size as in ``align_video_depth``; bilinear
resizing is linear, so only the per-pixel weighting differs.

At the end of a stream, ``flush`` runs a last incomplete group of fewer than K frames as a window with
fewer new frames.

``timings_ms`` holds the wall time per stage of the last ``push`` or ``flush`` (preprocess, semantics, sampling,
postprocess) in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..model.dit_video import ReferenceTokens, VideoDiT
from .sampling import autocast, sample_depth
from .timing import StageTimer
from .video_pipeline import PixelPerfectVideoDepth, initial_noise
from .video_windows import (KEYFRAMES, STRIDE, scale_and_shift, to_network_input, window_depth_to_original,
                            window_slots)

MODES = ("stream_exact", "stream_cached")
"""Streaming modes (see the module docstring)."""
STAGES = ("preprocess", "semantics", "sampling", "postprocess")
"""Keys of ``StreamingVideoDepth.timings_ms``."""


@dataclass(frozen=True)
class Reference:
    """One reference frame.

    Attributes:
        image: (3, S, S) float32 network input in [0, 1] (channel order as ``to_network_input``).
        depth: (S, S) float32 aligned normalised log-depth at the network size.
        stamp_ns: the frame's stamp in nanoseconds.
        index: the frame's position in the stream since the anchor (anchor = 0).
        tokens: (S/16 * S/16, D) Pi3 encoder tokens of ``image`` (``Pi3Semantics.encode``), kept by
            ``stream_cached``; None until computed.
    """

    image: torch.Tensor
    depth: np.ndarray
    stamp_ns: int
    index: int
    tokens: torch.Tensor | None = None


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
    """A pushed frame waiting for its window: network input (3, S, S), stamp, input size, Pi3 encoder
    tokens (S/16 * S/16, D) once ``stream_cached`` has computed them."""

    image: torch.Tensor
    stamp_ns: int
    height: int
    width: int
    tokens: torch.Tensor | None = None


@dataclass(frozen=True)
class ReferencePass:
    """The reference side of ``stream_cached`` for one reference set, sampled without the new frames
    (the "one-way references" approximation).

    Attributes:
        steps: per Euler step, the ``ReferenceTokens`` the new frames see (official size, float32:
            about 170 MB per step, 0.7 GB for 4 steps).
        tokens: (3, S/16 * S/16, D) Pi3 encoder tokens of the references, in cache order.
        scale, shift: the fit of the pass's reference prediction to the cached reference predictions,
            applied to every later group's prediction.
        timesteps: the sampling timesteps the pass ran with; a change of steps calls for a new pass.
    """

    steps: tuple[ReferenceTokens, ...]
    tokens: torch.Tensor
    scale: float
    shift: float
    timesteps: tuple[int, ...]


class _RecordingDiT:
    """``sample_depth``'s DiT in the reference pass: ``forward_recording``, keeping each step's tokens."""

    def __init__(self, dit: VideoDiT):
        self.dit = dit
        self.steps: list[ReferenceTokens] = []

    def __call__(self, x: torch.Tensor, semantics: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        velocity, references = self.dit.forward_recording(x, semantics, timestep)
        self.steps.append(references)
        return velocity


class _CachedReferenceDiT:
    """``sample_depth``'s DiT for new frames: ``forward_with_references`` with the recorded step's tokens."""

    def __init__(self, dit: VideoDiT, steps: tuple[ReferenceTokens, ...]):
        self.dit = dit
        self.steps = iter(steps)

    def __call__(self, x: torch.Tensor, semantics: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.dit.forward_with_references(x, semantics, timestep, next(self.steps))


class StreamingVideoDepth:
    """PPVD on a stream of frames, mode ``stream_exact`` or ``stream_cached`` (see the module docstring).

    Args:
        model: the windowed pipeline whose DiT, Pi3, steps, seed, device, dtype and channel order are used.
        frames_per_window: K new frames per window once the cache is ready, 1..13 (window 3 + K <= 16).
        keyframe_every: promote every N-th frame since the anchor to a keyframe, N >= 1.
        max_scale_jump: re-anchor when a fitted scale is <= 0 or ``|scale - 1| > max_scale_jump``; > 0
            (``math.inf``: re-anchor only on a non-positive scale).
        mode: "stream_exact" (references recomputed in every window) or "stream_cached" (references
            sampled once per reference set, their tokens reused: the "one-way references" approximation).

    Attributes:
        cache: the ``ReferenceCache``; ``cache.state`` is the stream's status.
        reanchors: how many times the stream was re-anchored since construction.
        references: ``stream_cached``'s ``ReferencePass`` of the current reference set; None until the
            next group needs it (cleared on promotion, reset and re-anchoring).
        reference_passes: how many reference passes ``stream_cached`` ran since construction.
        timings_ms: wall time of the last ``push`` or ``flush`` per stage (``STAGES``), milliseconds.

    Raises:
        ValueError: for parameters out of range.
    """

    def __init__(self, model: PixelPerfectVideoDepth, frames_per_window: int = 1, keyframe_every: int = 8,
                 max_scale_jump: float = 0.5, mode: str = "stream_exact"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
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
        self.mode = mode
        self.cache = ReferenceCache()
        self.noise = initial_noise(model.dit.input_size, model.seed).to(model.device)  # (16, 1, S, S)
        self.pending: list[_Frame] = []
        self.next_index = 0  # stream position of the next frame since the anchor
        self.reanchors = 0
        self.references: ReferencePass | None = None
        self.reference_passes = 0
        self._timer = StageTimer(model.device, STAGES)

    def reset(self) -> None:
        """Drop the references and any pending frame; the next frame becomes the anchor."""
        self.cache.reset()
        self.references = None
        self.pending = []
        self.next_index = 0

    @property
    def timings_ms(self) -> dict[str, float]:
        """Wall time of the last ``push`` or ``flush`` per stage (``STAGES``), milliseconds."""
        return self._timer.ms

    def _autocast(self) -> torch.autocast:
        return autocast(self.model.device, self.model.dtype)

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
        self._timer.restart()
        image = to_network_input(frame_rgb[None], self.model.bgr_quirk, self.model.dit.input_size)[0]
        self.pending.append(_Frame(image.to(self.model.device), stamp_ns, *frame_rgb.shape[:2]))
        self._timer.lap("preprocess")
        if self.cache.state == "ready" and len(self.pending) < self.frames_per_window:
            return []
        group, self.pending = self.pending, []
        return self._process(group)

    @torch.inference_mode()
    def flush(self) -> list[tuple[int, np.ndarray]]:
        """At the end of a stream: run the frames waiting for their group of K as one window with fewer
        new frames (3 references + the pending ones); ``timings_ms`` covers this run.

        Returns:
            (stamp_ns, depth) pairs of the pending frames as ``push`` returns them; empty if none waits.
        """
        self._timer.restart()
        group, self.pending = self.pending, []
        return self._process(group) if group else []

    def _process(self, group: list[_Frame]) -> list[tuple[int, np.ndarray]]:
        """Predict, align and publish ``group``: one frame while filling, K frames once ready."""
        if self.cache.state != "ready":
            return [out for frame in group for out in self._fill(frame)]
        if self.mode == "stream_cached":
            return self._process_cached(group)
        depth = self._predict(torch.cat([self.cache.images(), torch.stack([f.image for f in group])]),
                              self.noise[:len(KEYFRAMES) + len(group)])  # (3 + K, 1, S, S)
        aligned = self._align(depth, len(KEYFRAMES))
        if aligned is None:
            self.reanchors += 1
            self.reset()
            return self._process(group)
        return self._publish(group, aligned[len(KEYFRAMES):])

    def _process_cached(self, group: list[_Frame]) -> list[tuple[int, np.ndarray]]:
        """``stream_cached``: the K new frames alone against the current ``ReferencePass``."""
        if self.references is None or self.references.timesteps != tuple(self.model.timesteps):
            self.references = self._reference_pass()
            if self.references is None:
                self.reanchors += 1
                self.reset()
                return self._process(group)
        model, refs = self.model, self.references
        images = torch.stack([frame.image for frame in group])  # (K, 3, S, S)
        rows = cols = model.dit.input_size // 16
        with self._autocast():
            # Pi3: the new frames' encoder tokens, the decoder over [references; new], the new frames' rows.
            tokens = model.semantics.encode(images)  # (K, rows*cols, D)
            semantics = model.semantics.semantics_from_tokens(
                torch.cat([refs.tokens, tokens]), rows, cols)[len(KEYFRAMES):]  # (K, rows*cols, 2048)
            self._timer.lap("semantics")
            start = len(KEYFRAMES)
            depth = sample_depth(_CachedReferenceDiT(model.dit, refs.steps), images, semantics,
                                 self.noise[start:start + len(group)], model.timesteps).float()  # (K, 1, S, S)
            self._timer.lap("sampling")
        group = [replace(frame, tokens=frame_tokens) for frame, frame_tokens in zip(group, tokens)]
        return self._publish(group, depth * refs.scale + refs.shift)

    def _reference_pass(self) -> ReferencePass | None:
        """Sample the 3 references alone, recording their tokens per step, and fit their prediction.

        Returns None when the fit calls for re-anchoring (as ``_align``).
        """
        model = self.model
        rows = cols = model.dit.input_size // 16
        self.reference_passes += 1
        with self._autocast():
            missing = [i for i, entry in enumerate(self.cache.entries) if entry.tokens is None]
            if missing:  # references promoted while filling: encode them once
                tokens = model.semantics.encode(torch.stack([self.cache.entries[i].image for i in missing]))
                for i, entry_tokens in zip(missing, tokens):
                    self.cache.entries[i] = replace(self.cache.entries[i], tokens=entry_tokens)
            tokens = torch.stack([entry.tokens for entry in self.cache.entries])  # (3, rows*cols, D)
            semantics = model.semantics.semantics_from_tokens(tokens, rows, cols)  # (3, rows*cols, 2048)
            self._timer.lap("semantics")
            recorder = _RecordingDiT(model.dit)
            depth = sample_depth(recorder, self.cache.images(), semantics, self.noise[:len(KEYFRAMES)],
                                 model.timesteps).float()  # (3, 1, S, S)
            self._timer.lap("sampling")
        scale, shift = self._fit(depth, len(KEYFRAMES))
        self._timer.lap("postprocess")
        if scale is None:
            return None
        return ReferencePass(tuple(recorder.steps), tokens, scale, shift, tuple(model.timesteps))

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
        with self._autocast():
            semantics = model.semantics.forward_semantics(window)  # (N, (S/16)^2, 2048)
            self._timer.lap("semantics")
            depth = sample_depth(model.dit, window, semantics, noise, model.timesteps).float()
            self._timer.lap("sampling")
            return depth

    def _fit(self, depth: torch.Tensor, num_refs: int) -> tuple[float, float] | tuple[None, None]:
        """Fit the first ``num_refs`` slots of ``depth`` (N, 1, S, S) to the cached references.

        Returns (scale, shift), or (None, None) when the fit calls for re-anchoring.
        """
        prediction = depth[:num_refs, 0].cpu().numpy()  # (R, S, S)
        scale, shift = scale_and_shift(prediction, self.cache.depths()[:num_refs])
        if not np.isfinite(scale) or scale <= 0 or abs(scale - 1) > self.max_scale_jump:
            return None, None
        return float(scale), float(shift)

    def _align(self, depth: torch.Tensor, num_refs: int) -> torch.Tensor | None:
        """``depth`` (N, 1, S, S) fitted on its first ``num_refs`` slots (``_fit``); None to re-anchor."""
        if num_refs == 0:
            return depth
        scale, shift = self._fit(depth, num_refs)
        return None if scale is None else depth * scale + shift

    def _publish(self, group: list[_Frame], depth: torch.Tensor) -> list[tuple[int, np.ndarray]]:
        """Promote the group's keyframes and resize its aligned depth (K, 1, S, S) to each input size."""
        out = []
        for frame, frame_depth in zip(group, depth):
            index = self.next_index
            self.next_index += 1
            if self.cache.state != "ready" or index % self.keyframe_every == 0:
                self.cache.promote(Reference(frame.image, frame_depth[0].cpu().numpy(), frame.stamp_ns, index,
                                             frame.tokens))
                self.references = None  # the reference set changed
            out.append((frame.stamp_ns, window_depth_to_original(frame_depth[None], frame.height, frame.width)[0]))
        self._timer.lap("postprocess")
        return out
