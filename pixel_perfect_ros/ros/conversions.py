"""sensor_msgs <-> numpy conversions: Image, CompressedImage, depth images and CameraInfo intrinsics.

Our own replacement for cv_bridge (not usable here): honours ``step`` (row padding) and
``is_bigendian``, and follows REP 118 for depth (``32FC1`` metres with NaN = invalid, ``16UC1``
millimetres with 0 = invalid). Message data is written in place into ``msg_buffer``, the fastest way
measured here, with or without ``ROS_PYTHON_CHECK_FIELDS=1``.
"""
from __future__ import annotations

import array
import math
from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import DTypeLike
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from ..geometry.projection import scale_intrinsics


class ConversionError(ValueError):
    """A message cannot be converted: unsupported encoding, inconsistent sizes, bad intrinsics, ..."""


class _Layout(NamedTuple):
    """Pixel layout of an Image encoding: numpy base type (byte order added per message), channels."""

    dtype: str
    channels: int


_LAYOUTS = {
    "rgb8": _Layout("u1", 3),
    "bgr8": _Layout("u1", 3),
    "rgba8": _Layout("u1", 4),
    "bgra8": _Layout("u1", 4),
    "mono8": _Layout("u1", 1),
    "8UC1": _Layout("u1", 1),
    "8UC3": _Layout("u1", 3),
    "mono16": _Layout("u2", 1),
    "16UC1": _Layout("u2", 1),
    "rgb16": _Layout("u2", 3),
    "bgr16": _Layout("u2", 3),
    "32FC1": _Layout("f4", 1),
}
SUPPORTED_ENCODINGS = tuple(_LAYOUTS)
"""Image encodings ``image_to_array`` and ``image_to_rgb8`` accept."""

# cv2 conversion to RGB after 16-bit -> 8-bit and float -> 8-bit; None = already RGB. 8UC3 carries no
# channel order: its bytes are taken as they are (what cv_bridge does for a same-channel-count target).
_TO_RGB = {
    "rgb8": None,
    "8UC3": None,
    "rgb16": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "bgr16": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,
    "16UC1": cv2.COLOR_GRAY2RGB,
    "32FC1": cv2.COLOR_GRAY2RGB,
}

DEPTH_ENCODINGS = ("32FC1", "16UC1")
"""Encodings ``depth_to_image`` writes: float metres (NaN invalid), uint16 millimetres (0 invalid)."""
MAX_DEPTH_MM = 65535
"""Largest depth a 16UC1 image holds, millimetres."""
ASPECT_TOLERANCE = 0.01
"""Relative aspect-ratio difference up to which a CameraInfo for another resolution is rescaled."""


# ---------------------------------------------------------------------------------------- Image -> array


def header_stamp_ns(header) -> int:
    """A std_msgs/Header's stamp (rclpy or rosbags message) in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_to_array(msg: Image) -> np.ndarray:
    """The pixels of an Image as an array in native byte order.

    Args:
        msg: an Image with one of ``SUPPORTED_ENCODINGS``; rows ``step`` bytes apart (padding
            allowed), 16/32-bit samples in the byte order given by ``is_bigendian``.

    Returns:
        (H, W) for one channel, else (H, W, C); uint8 (``*8``, ``8UC*``), uint16 (``*16``, ``16UC1``)
        or float32 (``32FC1``), values as stored (no scaling). A view of ``msg.data`` (no copy, writes
        go to the message) unless the samples need byte swapping; not contiguous when rows are padded.

    Raises:
        ConversionError: unsupported encoding, zero width or height, ``step`` shorter than a row of
            pixels, or ``data`` shorter than ``step * height``.
    """
    layout = _LAYOUTS.get(msg.encoding)
    if layout is None:
        raise ConversionError(
            f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    if msg.width == 0 or msg.height == 0:
        raise ConversionError(f"empty {msg.encoding} image: {msg.width}x{msg.height}")
    byte_order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype(byte_order + layout.dtype)
    pixel_bytes = dtype.itemsize * layout.channels
    if msg.step < msg.width * pixel_bytes:
        raise ConversionError(
            f"{msg.encoding} image step {msg.step} is shorter than a row: {msg.width} px * {pixel_bytes} B")
    if len(msg.data) < msg.step * msg.height:
        raise ConversionError(
            f"{msg.encoding} image data has {len(msg.data)} bytes, expected step * height = "
            f"{msg.step} * {msg.height} = {msg.step * msg.height}")
    pixels = np.ndarray(
        (msg.height, msg.width, layout.channels), dtype=dtype, buffer=msg.data,
        strides=(msg.step, pixel_bytes, dtype.itemsize))  # (H, W, C) view
    if not dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder("="))
    return pixels[..., 0] if layout.channels == 1 else pixels


def image_to_rgb8(msg: Image) -> np.ndarray:
    """An Image of any ``SUPPORTED_ENCODINGS`` as 8-bit RGB (the model's input).

    bgr/bgra are reordered, alpha dropped, mono replicated to three channels, 16-bit samples scaled by
    ``>> 8``; ``32FC1`` is an intensity in [0, 1]: clipped, times 255, rounded, with NaN and +-inf
    replaced by 0 (count them first with ``nonfinite_pixels(image_to_array(msg))`` to warn).
    ``8UC3`` carries no channel order and is taken as RGB as is.

    Args:
        msg: an Image (see ``image_to_array`` for the accepted layouts).

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous. For an unpadded ``rgb8``/``8UC3`` image it is a view of
        ``msg.data`` (no copy); otherwise a new array.

    Raises:
        ConversionError: as ``image_to_array``.
    """
    pixels = image_to_array(msg)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype == np.float32:
        intensity = np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
        pixels = np.rint(np.clip(intensity, 0.0, 1.0) * 255.0).astype(np.uint8)
    code = _TO_RGB[msg.encoding]
    return np.ascontiguousarray(pixels) if code is None else cv2.cvtColor(pixels, code)


def nonfinite_pixels(pixels: np.ndarray) -> int:
    """Number of pixels with a NaN or +-inf sample (0 for integer arrays).

    Args:
        pixels: (H, W) or (H, W, C) array of any dtype.

    Returns:
        The count of (H, W) positions where any channel is non-finite.
    """
    if not np.issubdtype(pixels.dtype, np.floating):
        return 0
    finite = np.isfinite(pixels)
    if finite.ndim == 3:
        finite = finite.all(axis=2)
    return int(finite.size - np.count_nonzero(finite))


def compressed_to_rgb8(msg: CompressedImage) -> np.ndarray:
    """A CompressedImage (JPEG, PNG, or anything cv2.imdecode reads) as 8-bit RGB.

    Grey images are replicated to three channels, alpha is dropped, 16-bit PNGs are scaled by ``>> 8``.
    Decoding ignores ``msg.format`` (the codec is detected from the data, which image_transport's
    ``compressed`` plugin always stores in BGR order); ``compressedDepth`` messages are rejected.

    Args:
        msg: a CompressedImage.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        ConversionError: ``compressedDepth`` format, empty or undecodable data.
    """
    if "compresseddepth" in msg.format.lower():
        raise ConversionError(f"CompressedImage format {msg.format!r} is a depth image, not a colour image")
    if len(msg.data) == 0:
        raise ConversionError("CompressedImage has no data")
    pixels = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ConversionError(
            f"cannot decode CompressedImage (format {msg.format!r}, {len(msg.data)} bytes)")
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ConversionError(f"decoded CompressedImage has unsupported sample type {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    codes = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in codes:
        raise ConversionError(f"decoded CompressedImage has {channels} channels; expected 1, 3 or 4")
    return cv2.cvtColor(pixels, codes[channels])


# ---------------------------------------------------------------------------------------- array -> Image


def message_to_rgb8(msg: Image | CompressedImage) -> np.ndarray:
    """An Image (``image_to_rgb8``) or CompressedImage (``compressed_to_rgb8``) as (H, W, 3) uint8 RGB.

    Raises:
        ConversionError: as those two.
    """
    return compressed_to_rgb8(msg) if isinstance(msg, CompressedImage) else image_to_rgb8(msg)


def msg_buffer(shape: tuple[int, ...], dtype: DTypeLike) -> tuple[array.array, np.ndarray]:
    """A zero-filled buffer for a message's ``data`` field and a writable array view of it.

    Fill the view, then assign the buffer to ``data``: the array is written once, in place. An
    ``array.array('B')`` is what the generated setters take without a per-element check when
    ``ROS_PYTHON_CHECK_FIELDS=1`` (a ``bytes`` value costs ~0.3 s per 3 MB there); without checks they
    copy it once. Measured fastest here (see ``tools/bench_conversions.py``).

    Args:
        shape: shape of the view, e.g. (H, W) or (h, w, 4).
        dtype: element type of the view with explicit byte order for multi-byte types (``"<f4"``).

    Returns:
        ``(data, view)``: ``array.array('B')`` of ``prod(shape) * itemsize`` zero bytes, and a
        C-contiguous ``view`` of it with ``shape`` and ``dtype``.
    """
    dtype = np.dtype(dtype)
    data = array.array("B", [0]) * (math.prod(shape) * dtype.itemsize)
    return data, np.frombuffer(data, dtype=dtype).reshape(shape)


def depth_to_image(depth: np.ndarray, header: Header, encoding: str = "32FC1") -> Image:
    """A depth map as a REP 118 depth Image (little-endian, unpadded rows).

    ``32FC1``: float32 as is; NaN stays NaN and +-inf becomes NaN (invalid). ``16UC1``: millimetres
    ``floor(depth * 1000 + 0.5)`` (round half up, in float32, like depth_image_proc's
    ``DepthTraits<uint16_t>::fromMeters``); invalid (NaN, inf, ``<= 0``, or rounding to 0 mm or above
    ``MAX_DEPTH_MM``) becomes 0.

    Args:
        depth: (H, W) float, metres (or relative units; 16UC1 then stores units / 1000), NaN = invalid.
        header: the Image header (the source frame's stamp and optical frame_id), used as is.
        encoding: one of ``DEPTH_ENCODINGS``.

    Returns:
        The Image; its data is a copy, ``depth`` is not modified.

    Raises:
        ConversionError: unsupported encoding, or ``depth`` not a non-empty 2-D float array.
    """
    if depth.ndim != 2 or depth.size == 0 or not np.issubdtype(depth.dtype, np.floating):
        raise ConversionError(f"depth must be a non-empty (H, W) float array, got {depth.shape} {depth.dtype}")
    if encoding == "32FC1":
        data, pixels = msg_buffer(depth.shape, "<f4")
        np.copyto(pixels, depth, casting="same_kind")
        np.copyto(pixels, np.nan, where=np.isinf(pixels))
    elif encoding == "16UC1":
        data, pixels = msg_buffer(depth.shape, "<u2")  # zeros: invalid
        depth_mm = np.floor(depth.astype(np.float32, copy=False) * 1000.0 + 0.5)  # (H, W), NaN stays NaN
        np.copyto(pixels, depth_mm, casting="unsafe", where=(depth_mm >= 1.0) & (depth_mm <= MAX_DEPTH_MM))
    else:
        raise ConversionError(
            f"unsupported depth encoding {encoding!r}; supported: {', '.join(DEPTH_ENCODINGS)}")
    return _image(data, pixels, header, encoding)


def image_to_depth(msg: Image) -> np.ndarray:
    """A REP 118 depth Image as metres: the inverse of ``depth_to_image``.

    Args:
        msg: ``32FC1`` (metres; NaN, inf and 0 invalid) or ``16UC1`` (millimetres; 0 invalid), either
            endianness, any row padding.

    Returns:
        (H, W) float32 metres, NaN = invalid (a new array).

    Raises:
        ConversionError: for other encodings or inconsistent sizes.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ConversionError(
            f"unsupported depth encoding {msg.encoding!r}; supported: {', '.join(DEPTH_ENCODINGS)}")
    pixels = image_to_array(msg)
    depth = pixels.astype(np.float32) / (1000.0 if msg.encoding == "16UC1" else 1.0)
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def rgb8_to_image(rgb: np.ndarray, header: Header) -> Image:
    """An RGB array as an ``rgb8`` Image (unpadded rows).

    Args:
        rgb: (H, W, 3) uint8 RGB.
        header: the Image header, used as is.

    Returns:
        The Image; its data is a copy.

    Raises:
        ConversionError: ``rgb`` not a non-empty (H, W, 3) uint8 array.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0 or rgb.dtype != np.uint8:
        raise ConversionError(f"rgb must be a non-empty (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    data, pixels = msg_buffer(rgb.shape, np.uint8)
    np.copyto(pixels, rgb)
    return _image(data, pixels, header, "rgb8")


def _image(data: array.array, pixels: np.ndarray, header: Header, encoding: str) -> Image:
    """Unpadded little-endian Image of ``encoding`` from ``msg_buffer``'s ``(data, view)``."""
    height, width = pixels.shape[:2]
    return Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=pixels.strides[0], data=data)


# ------------------------------------------------------------------------------------------- CameraInfo


def camera_info_to_intrinsics(info: CameraInfo, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The intrinsics of a ``width x height`` image that a CameraInfo describes.

    In order (image_geometry's conventions): the ROI (used when ``roi.width``/``roi.height`` are
    nonzero; per axis, 0 = the full ``info.width``/``info.height``) shifts the principal point by
    ``-x_offset``/``-y_offset``; binning (0 or 1 = none) divides by ``binning_x``/``binning_y``, giving
    an image of ``roi size // binning``. If that size still differs from ``width x height`` but has the
    same aspect ratio within ``ASPECT_TOLERANCE`` (a CameraInfo published for another resolution), the
    intrinsics are scaled by ``width / size`` and ``height / size`` (``scale_intrinsics``: image_proc's
    ``cx' = cx * s`` convention). When ``P`` is all zero (drivers that only fill ``K``), ``P = [K | 0]``.

    Args:
        info: the camera's CameraInfo.
        width: width of the image the intrinsics are for, pixels.
        height: height of that image, pixels.

    Returns:
        ``(K, P)``: (3, 3) and (3, 4) float64, pixels of the ``width x height`` image.

    Raises:
        ConversionError: ``fx``/``fy`` of P (or of K when P is empty) zero or non-finite, an empty
            described size, or a size whose aspect ratio differs from the image's (both sizes named).
    """
    K = np.array(info.k, dtype=np.float64).reshape(3, 3)
    P = np.array(info.p, dtype=np.float64).reshape(3, 4)
    source = "P"
    if not P.any():
        P = np.hstack([K, np.zeros((3, 1))])
        source = "K (P is empty)"
    for name, f in (("fx", P[0, 0]), ("fy", P[1, 1])):
        if not math.isfinite(f) or f == 0.0:
            raise ConversionError(f"CameraInfo {source} has invalid {name} = {f}")
    # ROI: pixel origin moves to (x_offset, y_offset) of the full-resolution sensor.
    shift = np.array([[1.0, 0.0, -float(info.roi.x_offset)], [0.0, 1.0, -float(info.roi.y_offset)], [0.0, 0.0, 1.0]])
    K, P = shift @ K, shift @ P
    binning_x, binning_y = max(info.binning_x, 1), max(info.binning_y, 1)
    K, P = scale_intrinsics(K, P, 1.0 / binning_x, 1.0 / binning_y)
    described_w = (info.roi.width or info.width) // binning_x
    described_h = (info.roi.height or info.height) // binning_y
    if (described_w, described_h) == (width, height):
        return K, P
    sizes = (f"CameraInfo describes a {described_w}x{described_h} image (after ROI and binning), "
             f"the image is {width}x{height}")
    if described_w == 0 or described_h == 0 or width == 0 or height == 0:
        raise ConversionError(f"empty size: {sizes}")
    if abs((width / height) / (described_w / described_h) - 1.0) > ASPECT_TOLERANCE:
        raise ConversionError(f"aspect ratios differ: {sizes}")
    return scale_intrinsics(K, P, width / described_w, height / described_h)


def scaled_camera_info(info: CameraInfo, K: np.ndarray, P: np.ndarray, width: int, height: int,
                       header: Header) -> CameraInfo:
    """The CameraInfo of a published image (e.g. the depth image) derived from the input camera's.

    ``K``, ``P``, ``width``, ``height`` and ``header`` are the caller's (intrinsics already for this
    image, e.g. from ``camera_info_to_intrinsics`` and ``scale_intrinsics``); ``D``,
    ``distortion_model`` and ``R`` are copied from ``info`` (distortion coefficients act on normalised
    coordinates, so they hold at any resolution). Binning is 0 and the ROI all zero: the intrinsics
    already account for them.

    Args:
        info: the input camera's CameraInfo.
        K: (3, 3) float camera matrix, pixels of the published image.
        P: (3, 4) float projection matrix, pixels of the published image.
        width: published image width, pixels.
        height: published image height, pixels.
        header: the published image's header (same stamp and frame_id), used as is.

    Returns:
        A new CameraInfo.

    Raises:
        ConversionError: K or P of the wrong shape.
    """
    K = np.asarray(K, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    if K.shape != (3, 3) or P.shape != (3, 4):
        raise ConversionError(f"K must be (3, 3) and P (3, 4), got {K.shape} and {P.shape}")
    return CameraInfo(
        header=header, width=int(width), height=int(height), distortion_model=info.distortion_model,
        d=array.array("d", info.d), k=K.ravel().copy(), r=np.array(info.r, dtype=np.float64), p=P.ravel().copy(),
        binning_x=0, binning_y=0, roi=RegionOfInterest())


def pinhole_camera_info(K: np.ndarray, width: int, height: int, header: Header) -> CameraInfo:
    """The CameraInfo of an ideal pinhole camera: ``plumb_bob`` with zero D, R identity, ``P = [K | 0]``.

    Args:
        K: (3, 3) float camera matrix, pixels.
        width: image width, pixels.
        height: image height, pixels.
        header: the header, used as is.

    Returns:
        A new CameraInfo (no binning, empty ROI).

    Raises:
        ConversionError: K of the wrong shape.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ConversionError(f"K must be (3, 3), got {K.shape}")
    return CameraInfo(header=header, width=int(width), height=int(height), distortion_model="plumb_bob",
                      d=np.zeros(5), k=K.ravel().copy(), r=np.eye(3).ravel(),
                      p=np.hstack([K, np.zeros((3, 1))]).ravel())
