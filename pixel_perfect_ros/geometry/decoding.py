"""Decoding the model's normalised log-depth into published depth (PPD_SPEC 2.1).

PPD predicts ``n``: an affine-invariant map of ``log(1 + d)``, about 0 at the scene's 2nd and 1 at its
98th percentile (larger = farther), not clamped. A *decoder* turns ``n`` into the depth the node
publishes. Decoders are chosen by mode name through ``make_decoder``; a new mode (MoGe-2 scale, a sparse
metric sensor) is one more ``DepthDecoder`` subclass in ``DECODERS``.

Every current decoder is a log-affine map ``depth = exp(scale * n + shift) - offset``
(``log_affine_to_depth``). Outputs are finite and positive or NaN (invalid): a 0 in a 32FC1 image
becomes a point at the camera origin in depth_image_proc.
"""
from __future__ import annotations

import abc
import inspect
import math
from typing import ClassVar

import numpy as np


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


DECODERS: dict[str, type[DepthDecoder]] = {cls.mode: cls for cls in (RelativeDecoder, FixedRangeDecoder)}
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
