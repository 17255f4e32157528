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
# channel order and is read as bgr8: cv_bridge labels an OpenCV (BGR) frame 8UC3.
_TO_RGB = {
    "rgb8": None,
    "rgb16": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "8UC3": cv2.COLOR_BGR2RGB,
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
"""Relative aspect-ratio difference up to which a CameraInfo (or sparse depth) of another resolution is
rescaled."""
QUOTED_CHARS = 64
"""Characters of a message's string field (encoding, format, ...) quoted in an error message."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
"""The signatures by which cv2.imdecode recognises PNG and JPEG (SOI and the first marker's 0xFF)."""
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG frame-header markers SOF0..SOF15 (0xC4 DHT, 0xC8 JPG and 0xCC DAC are not)."""
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
"""JPEG markers without a length: TEM, RST0..RST7."""
_JPEG_SEGMENTS = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE})
"""JPEG markers with a length that libjpeg skips or reads before the frame header: DHT, DAC, DQT, DNL, DRI,
APP0..APP15, COM."""


def quoted(text: str) -> str:
    """``repr`` of an untrusted string (a message field), cut to ``QUOTED_CHARS`` characters plus '...'."""
    return repr(text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "...")


def aspect_ratios_differ(width: int, height: int, other_width: int, other_height: int) -> bool:
    """Whether two non-empty sizes (pixels) differ in aspect ratio by more than ``ASPECT_TOLERANCE``."""
    return abs((width / height) / (other_width / other_height) - 1.0) > ASPECT_TOLERANCE


def _check_pixels(what: str, width: int, height: int, max_pixels: int | None) -> None:
    """Raise ConversionError when ``width * height`` is above ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ConversionError(f"{what} of {width}x{height} = {width * height} pixels is above the limit of "
                              f"{max_pixels} pixels (max_input_pixels)")


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
            f"unsupported image encoding {quoted(msg.encoding)}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
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


def image_to_rgb8(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """An Image of any ``SUPPORTED_ENCODINGS`` as 8-bit RGB (the model's input).

    bgr/bgra are reordered, alpha dropped, mono replicated to three channels, 16-bit samples scaled by
    ``>> 8``; ``32FC1`` is an intensity in [0, 1]: clipped, times 255, rounded, with NaN and +-inf
    replaced by 0 (count them first with ``nonfinite_pixels(image_to_array(msg))`` to warn).
    ``8UC3`` carries no channel order and is read as ``bgr8``, cv_bridge's convention for OpenCV frames.

    Args:
        msg: an Image (see ``image_to_array`` for the accepted layouts).
        max_pixels: largest ``width * height`` accepted (checked on the message's fields before any
            conversion), pixels; None = no limit.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous. For an unpadded ``rgb8`` image it is a view of ``msg.data``
        (no copy); otherwise a new array.

    Raises:
        ConversionError: as ``image_to_array``, or above ``max_pixels``.
    """
    _check_pixels("Image", msg.width, msg.height, max_pixels)
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


def _png_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) in a PNG's IHDR chunk (the first chunk, right after the signature), or None."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _jpeg_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) in a JPEG's frame header (SOFn), found by walking the marker segments from SOI as
    libjpeg reads them; None at anything else before it (scan data, end of image, an unknown marker, bytes
    libjpeg would skip as garbage, truncated data)."""
    i = 2  # after SOI
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte before the marker
            i += 1
        elif marker in _JPEG_STANDALONE:
            i += 2
        elif marker in _JPEG_SOF:  # FF Cn, length (2), precision (1), height (2), width (2)
            if i + 9 > len(data):
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        elif marker in _JPEG_SEGMENTS:
            length = int.from_bytes(data[i + 2:i + 4], "big")  # counts its own two bytes
            if length < 2:
                return None
            i += 2 + length
        else:
            return None
    return None


def encoded_image_size(data) -> tuple[int, int]:
    """An encoded image's (width, height) in pixels, read from its PNG or JPEG header without decoding.

    Only PNG and JPEG (the formats image_transport's ``compressed`` plugin writes) have their size read;
    anything else cv2.imdecode knows (WebP, TIFF, BMP, ...) is refused, since only a full decode would
    tell its size.

    Args:
        data: the encoded bytes (bytes, array.array('B') or a 1-D uint8 array).

    Raises:
        ConversionError: neither PNG nor JPEG, or no nonzero size in its header.
    """
    view = memoryview(data).cast("B")
    if view[:len(PNG_SIGNATURE)] == PNG_SIGNATURE:
        kind, size = "PNG", _png_size(view)
    elif view[:len(JPEG_SIGNATURE)] == JPEG_SIGNATURE:
        kind, size = "JPEG", _jpeg_size(view)
    else:
        raise ConversionError("neither PNG nor JPEG (the formats whose size is read before decoding)")
    if size is None or 0 in size:
        raise ConversionError(f"no image size in its {kind} header")
    return size


def compressed_to_rgb8(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """A PNG or JPEG CompressedImage as 8-bit RGB, its size checked before decoding.

    The size is read from the header (``encoded_image_size``) and refused above ``max_pixels`` before
    anything is decoded; other formats are refused (their size is only known by decoding them). A decoded
    size other than the header's is refused too. Grey images are replicated to three channels, alpha is
    dropped, 16-bit PNGs are scaled by ``>> 8``. Decoding ignores ``msg.format`` (the codec is detected
    from the data, which image_transport's ``compressed`` plugin always stores in BGR order);
    ``compressedDepth`` messages are rejected.

    Args:
        msg: a CompressedImage.
        max_pixels: largest width x height accepted, pixels; None = no limit.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous.

    Raises:
        ConversionError: ``compressedDepth`` format, empty data, neither PNG nor JPEG, no size in the
            header, above ``max_pixels``, undecodable, or decoded to another size than the header's.
    """
    if "compresseddepth" in msg.format.lower():
        raise ConversionError(f"CompressedImage format {quoted(msg.format)} is a depth image, not a colour image")
    if len(msg.data) == 0:
        raise ConversionError("CompressedImage has no data")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    described = f"CompressedImage (format {quoted(msg.format)}, {len(data)} bytes)"
    try:
        width, height = encoded_image_size(data)
    except ConversionError as error:
        raise ConversionError(f"cannot decode {described}: {error}") from None
    _check_pixels(described, width, height, max_pixels)
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ConversionError(f"cannot decode {described}")
    if pixels.shape[:2] != (height, width):
        raise ConversionError(f"{described} decoded to {pixels.shape[1]}x{pixels.shape[0]}, its header says "
                              f"{width}x{height}")
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


def message_to_rgb8(msg: Image | CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """An Image (``image_to_rgb8``) or CompressedImage (``compressed_to_rgb8``) as (H, W, 3) uint8 RGB,
    refused above ``max_pixels`` (width x height, pixels; None = no limit) before decoding.

    Raises:
        ConversionError: as those two.
    """
    convert = compressed_to_rgb8 if isinstance(msg, CompressedImage) else image_to_rgb8
    return convert(msg, max_pixels)


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


def float_image(values: np.ndarray, header: Header) -> Image:
    """(H, W) float values as a 32FC1 Image (little-endian, unpadded rows), NaN and +-inf kept as they are
    (``depth_to_image`` turns inf into NaN, "no depth"; in an uncertainty image inf has a meaning)."""
    data, pixels = msg_buffer(values.shape, "<f4")
    np.copyto(pixels, values, casting="same_kind")
    return _image(data, pixels, header, "32FC1")


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
            f"unsupported depth encoding {quoted(msg.encoding)}; supported: {', '.join(DEPTH_ENCODINGS)}")
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
        ConversionError: (each with the reason) ``fx``/``fy`` of P or K not finite and positive (a
            negative one mirrors the cloud), ``cx``/``cy`` or any other entry of P or K not finite, an
            ROI outside the sensor (``x_offset + width > info.width`` or the same in y, when
            ``info.width``/``info.height`` are given), an empty described size, or a size whose aspect
            ratio differs from the image's (both sizes named).
    """
    K = np.array(info.k, dtype=np.float64).reshape(3, 3)
    P = np.array(info.p, dtype=np.float64).reshape(3, 4)
    if P.any():
        _check_camera_matrix("P", P)
        _check_camera_matrix("K", K)
    else:
        P = np.hstack([K, np.zeros((3, 1))])
        _check_camera_matrix("K (P is empty)", P)
    _check_roi(info)
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
    if aspect_ratios_differ(width, height, described_w, described_h):
        raise ConversionError(f"aspect ratios differ: {sizes}")
    return scale_intrinsics(K, P, width / described_w, height / described_h)


def _check_camera_matrix(name: str, M: np.ndarray) -> None:
    """Raise ConversionError unless the (3, 3) K or (3, 4) P ``M`` has finite positive fx, fy and only
    finite entries; ``name`` says which matrix it is."""
    for entry, (row, col) in (("fx", (0, 0)), ("fy", (1, 1)), ("cx", (0, 2)), ("cy", (1, 2))):
        value = M[row, col]
        if not math.isfinite(value) or (entry.startswith("f") and value <= 0.0):
            raise ConversionError(f"CameraInfo {name} has invalid {entry} = {value}")
    if not np.isfinite(M).all():
        row, col = np.argwhere(~np.isfinite(M))[0]
        raise ConversionError(f"CameraInfo {name} has a non-finite entry at row {row}, column {col}: {M[row, col]}")


def _check_roi(info: CameraInfo) -> None:
    """Raise ConversionError when the CameraInfo's ROI (0 width or height: the full sensor) reaches past
    the sensor's ``info.width`` x ``info.height`` (not checked on an axis where that is 0: unknown)."""
    roi = info.roi
    for axis, offset, size, sensor in (("x", roi.x_offset, roi.width, info.width),
                                       ("y", roi.y_offset, roi.height, info.height)):
        if sensor and offset + (size or sensor) > sensor:
            raise ConversionError(f"CameraInfo ROI reaches outside the {info.width}x{info.height} sensor: "
                                  f"{axis}_offset {offset} + {size or sensor} > {sensor}")


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
