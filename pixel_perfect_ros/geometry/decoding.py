"""Decoding the model's normalised log-depth into published depth (PPD_SPEC 2.1).

PPD predicts ``n``: an affine-invariant map of ``log(1 + d)``, about 0 at the scene's 2nd and 1 at its
98th percentile (larger = farther), not clamped. A *decoder* turns ``n`` into the depth the node
publishes. Decoders are chosen by mode name through ``make_decoder``:

- ``relative`` and ``fixed_range`` are fixed maps;
- ``moge2`` and ``sparse_topic`` are *reference-aligned*: each frame, ``update`` fits
  ``log(1 + reference) = a n + b`` to a metric reference depth of the same frame (MoGe-2's prediction,
  or another sensor's depth) with the official robust fit, and decoding applies that fit.

Every decoder is a log-affine map ``depth = exp(scale * n + shift) - offset``
(``log_affine_to_depth``). Outputs are finite and positive or NaN (invalid): a 0 in a 32FC1 image
becomes a point at the camera origin in depth_image_proc.
"""
from __future__ import annotations

import abc
import inspect
import math
from typing import ClassVar

import numpy as np

from .alignment import fit_log_affine_ransac


def log_affine_to_depth(n: np.ndarray, scale: float, shift: float, offset: float) -> np.ndarray:
    """``depth = exp(scale * n + shift) - offset``, with invalid results set to NaN.

    Computed in float64 (as fast as float32 in numpy, and precise for depths much smaller than
    ``offset``), returned as float32.

    Args:
        n: (H, W) float, normalised log-depth (any real values; NaN/inf allowed).
        scale: slope in ``log(offset + depth)`` space.
        shift: intercept in ``log(offset + depth)`` space.
        offset: subtracted after the exponential (1 for ``log(1 + d)`` space, 0 for ``log(d)``).

    Returns:
        (H, W) float32 depth; NaN where ``n`` is not finite or the result is not finite and positive
        (underflow to 0, overflow to inf, or ``<= 0`` after the offset).

    Raises:
        ValueError: if ``n`` is not 2-D.
    """
    n = np.asarray(n, dtype=np.float64)
    if n.ndim != 2:
        raise ValueError(f"normalised depth must be a (H, W) array, got shape {n.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        depth = (np.exp(scale * n + shift) - offset).astype(np.float32)
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def _finite_float(name: str, value: object) -> float:
    """``value`` as a finite float, else ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


class DepthDecoder(abc.ABC):
    """Normalised log-depth ``n`` -> published depth, for one decoding mode.

    Attributes:
        mode: the mode name (key of ``DECODERS``), e.g. for the status message.
        is_metric: True if the output is in metres, False for a relative (unitless) depth.
    """

    mode: ClassVar[str]
    is_metric: ClassVar[bool]

    @abc.abstractmethod
    def __call__(self, n: np.ndarray) -> np.ndarray:
        """Decode one frame.

        Args:
            n: (H, W) float32 normalised log-depth, as predicted (not clamped; NaN/inf allowed).

        Returns:
            (H, W) float32 depth (metres if ``is_metric``), finite and > 0, NaN = invalid.
        """

    @abc.abstractmethod
    def parameters(self) -> dict[str, float]:
        """The decoding parameters used for the last decoded frame (constants for fixed modes)."""


class LogAffineDecoder(DepthDecoder):
    """A decoder ``depth = exp(scale * n + shift) - offset`` with constant parameters.

    Equivalently ``log(offset + depth) = scale * n + shift``. ``parameters()`` reports ``scale``,
    ``shift`` and ``offset`` (subclasses add their own inputs).
    """

    def __init__(self, scale: float, shift: float, offset: float) -> None:
        self.scale = scale
        self.shift = shift
        self.offset = offset

    def __call__(self, n: np.ndarray) -> np.ndarray:
        return log_affine_to_depth(n, self.scale, self.shift, self.offset)

    def parameters(self) -> dict[str, float]:
        return {"scale": self.scale, "shift": self.shift, "offset": self.offset}


class RelativeDecoder(LogAffineDecoder):
    """``depth = exp(n)``: relative depth, not metres.

    Monotonic and strictly positive: about 1 at the scene's 2nd percentile of depth, e (2.718) at its
    98th. The normalisation is per image, so values are comparable within one frame only, and ratios are
    not metric ratios (``n`` is affine in ``log(1 + d)``, not in ``log(d)``).
    """

    mode = "relative"
    is_metric = False

    def __init__(self) -> None:
        super().__init__(scale=1.0, shift=0.0, offset=0.0)


class FixedRangeDecoder(LogAffineDecoder):
    """Metres from an assumed scene range: the inverse of the training normalisation.

    Takes the scene's 2nd/98th depth percentiles to be ``near_m``/``far_m``, i.e. ``q2 = log(1 + near_m)``
    and ``q98 = log(1 + far_m)``, and returns ``depth = exp(q2 + n * (q98 - q2)) - 1``: ``n = 0`` maps to
    ``near_m`` and ``n = 1`` to ``far_m``. The output is in metres but only as right as the assumed range,
    which is wrong whenever the scene's real percentiles differ. Pixels with ``n`` below the level that
    maps to 0 m (all ``n <= 0`` when ``near_m = 0``) are NaN.

    Args:
        near_m: assumed 2nd percentile of scene depth, metres, >= 0.
        far_m: assumed 98th percentile of scene depth, metres, > ``near_m``, finite.

    Raises:
        ValueError: for non-numeric, non-finite, negative or unordered values.
    """

    mode = "fixed_range"
    is_metric = True

    def __init__(self, near_m: float, far_m: float) -> None:
        near_m = _finite_float("near_m", near_m)
        far_m = _finite_float("far_m", far_m)
        if near_m < 0:
            raise ValueError(f"near_m must be >= 0, got {near_m}")
        if far_m <= near_m:
            raise ValueError(f"far_m must be greater than near_m, got near_m={near_m}, far_m={far_m}")
        self.near_m = near_m
        self.far_m = far_m
        q2, q98 = math.log1p(near_m), math.log1p(far_m)
        super().__init__(scale=q98 - q2, shift=q2, offset=1.0)

    def parameters(self) -> dict[str, float]:
        return {"near_m": self.near_m, "far_m": self.far_m, **super().parameters()}


def sample_reference(n: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (n, reference) at the reference's valid pixels, for references of any resolution.

    Each valid reference pixel (finite and > 0; NaN, inf and 0 are invalid, as in 32FC1/16UC1 depth
    images) is matched with the ``n`` pixel whose centre is nearest to its own (pixel-centre scaling),
    so sparse references (a projected LiDAR scan) keep every point.

    Args:
        n: (H, W) normalised log-depth.
        reference: (Hr, Wr) metric depth, metres, same camera and field of view as ``n``.

    Returns:
        (N,) float32 ``n`` values and (N,) float32 reference depths; N may be 0.
    """
    rows, cols = np.nonzero(np.isfinite(reference) & (reference > 0))
    height, width = n.shape
    r = np.minimum(((rows + 0.5) * height / reference.shape[0]).astype(np.int64), height - 1)
    c = np.minimum(((cols + 0.5) * width / reference.shape[1]).astype(np.int64), width - 1)
    x = n[r, c].astype(np.float32)
    keep = np.isfinite(x)
    return x[keep], reference[rows, cols].astype(np.float32)[keep]


class ReferenceAlignedDecoder(LogAffineDecoder):
    """Metres from a metric reference depth of the same frame, through a robust fit in log(1+d) space.

    ``update(n, reference)`` fits ``log(1 + reference) = a n + b`` on the reference's valid pixels with
    the official RANSAC (MAD threshold, seeded: deterministic), as PPD's point-cloud script does; if
    ``a <= 0`` the official fallback ``a = mean(log(1 + ref)) / mean(n)``, ``b = 0`` is used. Decoding is
    then ``depth = exp(a n + b) - 1``, clipped above at ``max_depth_factor`` times the largest reference
    depth (the official script clips at 1x), NaN for ``<= 0``.

    Temporal behaviour (for a sensor that can drop out or glitch): with ``smoothing`` s > 0 the fit is an
    exponential average ``(a, b) <- s (a, b) + (1 - s) (a_new, b_new)``; a new fit that moves the depth
    at the frame's median ``n`` by more than ``max_jump`` (relative) is rejected as an outlier, unless
    ``MAX_REJECTIONS`` fits in a row were rejected (the scene changed: start again from the new fit).
    With fewer than ``min_points`` valid reference pixels the last fit is held; before any fit the
    decoder falls back to relative depth ``exp(n)`` and ``is_metric`` is False.

    Attributes:
        state: what the last ``update`` did: "fitted", "smoothed", "outlier_rejected", "held" (too few
            points), "relative_fallback" (no fit yet).
        points: valid reference pixels used in the last ``update``.
    """

    MAX_REJECTIONS = 5

    def __init__(self, min_points: int, smoothing: float, max_jump: float, max_depth_factor: float,
                 seed: int = 0) -> None:
        if isinstance(min_points, bool) or not isinstance(min_points, (int, np.integer)) or min_points < 2:
            raise ValueError(f"min_points must be an integer >= 2, got {min_points!r}")
        smoothing = _finite_float("smoothing", smoothing)
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.max_jump = _finite_float("max_jump", max_jump)
        self.max_depth_factor = _finite_float("max_depth_factor", max_depth_factor)
        if self.max_jump <= 0 or self.max_depth_factor < 1:
            raise ValueError(f"max_jump must be > 0 and max_depth_factor >= 1, got {max_jump}, {max_depth_factor}")
        super().__init__(scale=1.0, shift=0.0, offset=0.0)  # relative until the first fit
        self.min_points, self.smoothing, self.seed = int(min_points), smoothing, seed
        self.max_depth_m = math.inf
        self.state, self.points, self._rejections = "relative_fallback", 0, 0

    @property
    def is_metric(self) -> bool:  # type: ignore[override]
        return self.offset == 1.0

    def update(self, n: np.ndarray, reference: np.ndarray) -> str:
        """Fit this frame's reference (see the class docstring); returns the new ``state``.

        Args:
            n: (H, W) normalised log-depth of the frame.
            reference: (Hr, Wr) metric depth of the same frame, metres; NaN, inf or 0 = no measurement.
        """
        x, y_depth = sample_reference(n, reference)
        self.points = len(x)
        if self.points < self.min_points:
            self.state = "held" if self.is_metric else "relative_fallback"
            return self.state
        fit = fit_log_affine_ransac(x, y_depth, np.ones(len(x), bool), seed=self.seed)
        a, b = (fit.a, fit.b) if fit.a > 0 else (float(np.log1p(y_depth).mean() / x.mean()), 0.0)
        max_depth_m = float(y_depth.max()) * self.max_depth_factor
        if not self.is_metric or self.smoothing == 0:
            self._accept(a, b, max_depth_m, "fitted")
            return self.state
        jumped = self._jump(a, b, float(np.median(x))) > self.max_jump
        if jumped and self._rejections < self.MAX_REJECTIONS:
            self._rejections += 1
            self.state = "outlier_rejected"
        elif jumped:  # MAX_REJECTIONS in a row: the scene changed, restart from this fit
            self._accept(a, b, max_depth_m, "fitted")
        else:
            s = self.smoothing
            self._accept(s * self.scale + (1 - s) * a, s * self.shift + (1 - s) * b, max_depth_m, "smoothed")
        return self.state

    def _jump(self, a: float, b: float, n_median: float) -> float:
        current = math.expm1(self.scale * n_median + self.shift)
        return abs(math.expm1(a * n_median + b) / current - 1) if current > 0 else math.inf

    def _accept(self, a: float, b: float, max_depth_m: float, state: str) -> None:
        self.scale, self.shift, self.offset = a, b, 1.0
        self.max_depth_m, self.state, self._rejections = max_depth_m, state, 0

    def __call__(self, n: np.ndarray) -> np.ndarray:
        depth = super().__call__(n)
        return np.minimum(depth, self.max_depth_m, out=depth, where=np.isfinite(depth))

    def parameters(self) -> dict[str, float]:
        return {**super().parameters(), "max_depth_m": self.max_depth_m, "reference_points": float(self.points)}


class MoGe2Decoder(ReferenceAlignedDecoder):
    """Metric depth aligned to MoGe-2's metric prediction of the same frame, fitted afresh each frame
    as the official point-cloud script does (clip at the largest MoGe-2 depth in its mask).

    Args:
        moge2_min_points: valid MoGe-2 pixels needed for a fit (else the last fit is held).
    """

    mode = "moge2"

    def __init__(self, moge2_min_points: int) -> None:
        super().__init__(min_points=moge2_min_points, smoothing=0.0, max_jump=1.0, max_depth_factor=1.0)


class SparseTopicDecoder(ReferenceAlignedDecoder):
    """Metric depth aligned to another sensor's depth image (an RGB-D camera's depth, or a LiDAR scan
    projected into this camera), smoothed over time with outlier rejection.

    Args:
        sparse_min_points: valid sensor pixels needed for a fit (else the last fit is held).
        sparse_smoothing: weight of the previous fit in the exponential average, [0, 1).
        sparse_max_jump: relative depth change at the median ``n`` above which a new fit is an outlier.
    """

    mode = "sparse_topic"

    def __init__(self, sparse_min_points: int, sparse_smoothing: float, sparse_max_jump: float) -> None:
        super().__init__(min_points=sparse_min_points, smoothing=sparse_smoothing, max_jump=sparse_max_jump,
                         max_depth_factor=2.0)


DECODERS: dict[str, type[DepthDecoder]] = {
    cls.mode: cls for cls in (RelativeDecoder, FixedRangeDecoder, MoGe2Decoder, SparseTopicDecoder)
}
"""Decoder classes by mode name."""


def _decoder_class(mode: str) -> type[DepthDecoder]:
    if mode not in DECODERS:
        raise ValueError(f"unknown depth decoding mode {mode!r}; expected one of {sorted(DECODERS)}")
    return DECODERS[mode]


def decoder_parameter_names(mode: str) -> tuple[str, ...]:
    """Names of the keyword parameters ``make_decoder(mode, ...)`` requires (e.g. to read ROS params).

    Raises:
        ValueError: for an unknown mode.
    """
    return tuple(inspect.signature(_decoder_class(mode)).parameters)


def make_decoder(mode: str, **params: float) -> DepthDecoder:
    """Build the decoder for ``mode`` with exactly its parameters.

    Example: ``make_decoder("fixed_range", near_m=0.5, far_m=20.0)``.

    Raises:
        ValueError: for an unknown mode, missing or unexpected parameters, or invalid values.
    """
    cls = _decoder_class(mode)
    expected = decoder_parameter_names(mode)
    if set(params) != set(expected):
        raise ValueError(
            f"depth decoding mode {mode!r} takes parameters {list(expected)}, got {sorted(params)}"
        )
    return cls(**params)
