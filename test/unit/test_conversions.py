"""Image/CompressedImage/CameraInfo <-> numpy conversions on message objects (no DDS, no node)."""
import array
import functools
import struct
import zlib

import cv2
import numpy as np
import pytest
import sensor_msgs.msg._camera_info
import sensor_msgs.msg._image
import sensor_msgs.msg._region_of_interest
import std_msgs.msg._header
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from pixel_perfect_ros.ros.conversions import (
    SUPPORTED_ENCODINGS,
    ConversionError,
    camera_info_to_intrinsics,
    compressed_to_rgb8,
    depth_to_image,
    encoded_image_size,
    image_to_array,
    image_to_depth,
    image_to_rgb8,
    nonfinite_pixels,
    rgb8_to_image,
    scaled_camera_info,
)
from pixel_perfect_ros.tools import bench_conversions

# encoding -> (dtype, channels) as written by the test's own packer, independent of the module's table.
ENCODINGS = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3), "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1), "rgb16": (np.uint16, 3), "bgr16": (np.uint16, 3), "32FC1": (np.float32, 1),
}
PAD_BYTE = 0xAB


def make_image(pixels: np.ndarray, encoding: str, *, big_endian: bool = False, pad: int = 0) -> Image:
    """Pack (H, W[, C]) pixels into an Image by hand: chosen byte order, ``pad`` garbage bytes per row."""
    height, width = pixels.shape[:2]
    order = ">" if big_endian else "<"
    rows = pixels.astype(pixels.dtype.newbyteorder(order)).reshape(height, -1).view(np.uint8)  # (H, row bytes)
    data = np.concatenate([rows, np.full((height, pad), PAD_BYTE, np.uint8)], axis=1)
    return Image(header=Header(frame_id="cam"), height=height, width=width, encoding=encoding,
                 is_bigendian=int(big_endian), step=rows.shape[1] + pad, data=data.tobytes())


def random_pixels(encoding: str, height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    rng = np.random.default_rng(seed)
    if dtype is np.float32:
        return rng.normal(size=shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


@pytest.fixture(params=[False, True], ids=["plain", "check_fields"])
def check_fields(request, monkeypatch):
    """Run the test also as with ROS_PYTHON_CHECK_FIELDS=1 (field type asserts on every assignment)."""
    if request.param:
        for module in (sensor_msgs.msg._image, sensor_msgs.msg._camera_info,
                       sensor_msgs.msg._region_of_interest, std_msgs.msg._header):
            monkeypatch.setattr(module, "ros_python_check_fields", "1")
    return request.param


def test_supported_encodings_are_the_documented_twelve():
    assert set(SUPPORTED_ENCODINGS) == set(ENCODINGS)


# ------------------------------------------------------------------------------------------ image_to_array


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_image_to_array_round_trip(encoding, big_endian, pad):
    pixels = random_pixels(encoding)
    out = image_to_array(make_image(pixels, encoding, big_endian=big_endian, pad=pad))
    assert out.shape == pixels.shape
    assert out.dtype == pixels.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, pixels)


def test_image_to_array_is_a_view_of_the_message():
    msg = make_image(random_pixels("16UC1"), "16UC1", pad=2)
    out = image_to_array(msg)
    out[0, 1] = 0x0102
    assert msg.data[2:4] == array.array("B", [0x02, 0x01])  # little-endian, written through
    assert not out.flags.c_contiguous  # rows keep their padding


def test_image_to_array_big_endian_is_swapped_into_a_copy():
    msg = make_image(np.array([[0x0102, 0xA0B0]], np.uint16), "16UC1", big_endian=True)
    assert list(msg.data) == [0x01, 0x02, 0xA0, 0xB0]
    out = image_to_array(msg)
    np.testing.assert_array_equal(out, [[0x0102, 0xA0B0]])
    out[0, 0] = 0
    assert msg.data[1] == 0x02


def test_extra_data_beyond_step_times_height_is_ignored():
    pixels = random_pixels("mono8")
    msg = make_image(pixels, "mono8")
    msg.data.extend([1, 2, 3])
    np.testing.assert_array_equal(image_to_array(msg), pixels)


def make_bad(**fields) -> Image:
    msg = make_image(random_pixels("rgb8", 4, 6), "rgb8")
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize("msg, match", [
    (make_bad(encoding="yuv422"), r"unsupported image encoding 'yuv422'; supported: rgb8, bgr8"),
    (make_bad(encoding=""), "unsupported image encoding ''"),
    (make_bad(width=0), "empty rgb8 image: 0x4"),
    (make_bad(height=0), "empty rgb8 image: 6x0"),
    (make_bad(step=17), r"step 17 is shorter than a row: 6 px \* 3 B"),
    (make_bad(data=bytes(71)), r"71 bytes, expected step \* height = 18 \* 4 = 72"),
    (make_bad(encoding="32FC1", step=18), r"step 18 is shorter than a row: 6 px \* 4 B"),
])
def test_image_to_array_errors(msg, match):
    with pytest.raises(ConversionError, match=match):
        image_to_array(msg)
    with pytest.raises(ConversionError, match=match):
        image_to_rgb8(msg)


def test_conversion_error_is_a_value_error():
    assert issubclass(ConversionError, ValueError)


# ------------------------------------------------------------------------------------------- image_to_rgb8


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding, pixel, expected", [
    ("rgb8", [10, 20, 30], [10, 20, 30]),
    ("8UC3", [10, 20, 30], [30, 20, 10]),  # read as bgr8: cv_bridge's label of an OpenCV (BGR) frame
    ("bgr8", [10, 20, 30], [30, 20, 10]),
    ("rgba8", [10, 20, 30, 40], [10, 20, 30]),
    ("bgra8", [10, 20, 30, 40], [30, 20, 10]),
    ("rgb16", [0x0AFF, 0x1400, 0x1E80], [10, 20, 30]),
    ("bgr16", [0x0AFF, 0x1400, 0x1E80], [30, 20, 10]),
])
def test_image_to_rgb8_channel_order(encoding, pixel, expected, pad):
    dtype, _ = ENCODINGS[encoding]
    pixels = np.zeros((3, 4, len(pixel)), dtype)
    pixels[1, 2] = pixel
    rgb = image_to_rgb8(make_image(pixels, encoding, pad=pad))
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb[1, 2], expected)
    assert np.count_nonzero(rgb) == np.count_nonzero(expected)  # nothing leaks from padding


@pytest.mark.parametrize("encoding, value, grey", [
    ("mono8", 77, 77), ("8UC1", 200, 200), ("mono16", 0x12FF, 0x12), ("16UC1", 0xFF00, 0xFF)])
def test_image_to_rgb8_mono_is_grey(encoding, value, grey):
    pixels = np.zeros((2, 3), ENCODINGS[encoding][0])
    pixels[1, 1] = value
    rgb = image_to_rgb8(make_image(pixels, encoding, pad=1))
    np.testing.assert_array_equal(rgb[1, 1], [grey] * 3)
    assert np.count_nonzero(rgb) == 3


def test_image_to_rgb8_float_intensity():
    pixels = np.array([[0.2, 1.0, 2.0, -1.0, np.nan, np.inf, -np.inf, 0.5]], np.float32)
    msg = make_image(pixels, "32FC1", big_endian=True)
    np.testing.assert_array_equal(image_to_rgb8(msg)[0, :, 0], [51, 255, 255, 0, 0, 0, 0, 128])
    assert nonfinite_pixels(image_to_array(msg)) == 3


def test_nonfinite_pixels_counts_pixels_not_samples():
    pixels = np.zeros((2, 2, 3), np.float32)
    pixels[0, 0] = np.nan
    pixels[1, 1, 2] = np.inf
    assert nonfinite_pixels(pixels) == 2
    assert nonfinite_pixels(pixels[..., 0]) == 1
    assert nonfinite_pixels(np.zeros((2, 2), np.uint16)) == 0


def test_image_to_rgb8_unpadded_rgb8_is_not_copied():
    msg = make_image(random_pixels("rgb8"), "rgb8")
    image_to_rgb8(msg)[0, 0, 0] = 123
    assert msg.data[0] == 123


# -------------------------------------------------------------------------------------- compressed_to_rgb8


def compressed(bgr_or_grey: np.ndarray, ext: str, params=()) -> CompressedImage:
    ok, encoded = cv2.imencode(ext, bgr_or_grey, list(params))
    assert ok
    return CompressedImage(format=ext[1:], data=encoded.tobytes())


def test_compressed_png_is_exact():
    rgb = random_pixels("rgb8", 24, 32)
    np.testing.assert_array_equal(compressed_to_rgb8(compressed(rgb[..., ::-1], ".png")), rgb)


def test_compressed_png_grey_alpha_and_16_bit():
    grey = random_pixels("mono8", 8, 9)
    np.testing.assert_array_equal(compressed_to_rgb8(compressed(grey, ".png")), np.stack([grey] * 3, axis=2))
    rgba = random_pixels("rgba8", 8, 9)
    bgra = rgba[..., [2, 1, 0, 3]]
    np.testing.assert_array_equal(compressed_to_rgb8(compressed(bgra, ".png")), rgba[..., :3])
    rgb16 = random_pixels("rgb16", 8, 9)
    np.testing.assert_array_equal(compressed_to_rgb8(compressed(rgb16[..., ::-1], ".png")), rgb16 >> 8)


def test_compressed_jpeg_colours():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = [250, 0, 0]
    rgb[:, 16:32] = [0, 250, 0]
    rgb[:, 32:] = [0, 0, 250]
    out = compressed_to_rgb8(compressed(rgb[..., ::-1], ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 95)))
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 8.0  # lossy, chroma subsampled at the stripe edges
    np.testing.assert_allclose(out[16, [4, 24, 44]], [[250, 0, 0], [0, 250, 0], [0, 0, 250]], atol=12)


@pytest.mark.parametrize("msg, match", [
    (CompressedImage(format="jpeg", data=b"not an image"), "cannot decode CompressedImage"),
    (CompressedImage(format="png", data=b""), "no data"),
    (CompressedImage(format="16UC1; compressedDepth png", data=b"\x00" * 12), "is a depth image"),
])
def test_compressed_errors(msg, match):
    with pytest.raises(ConversionError, match=match):
        compressed_to_rgb8(msg)


# -------------------------------------------------------------------------------------------- input bounds


def png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG file (8-bit RGB, colour type 2) of ``width`` x ``height`` with one IDAT chunk, CRCs right."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@functools.cache
def png_bomb(side: int = 8000) -> bytes:
    """A ``side`` x ``side`` RGB PNG of zeros: 187 KB that decode to 192 MB at 8000 (built row by row)."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * side)  # filter type 0, then the row's samples
    return png(side, side, b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush())


def jpeg(height: int = 16, width: int = 24, params=()) -> bytes:
    """A grey-gradient JPEG encoded by cv2."""
    grey = (np.arange(height * width) % 251).astype(np.uint8).reshape(height, width)
    ok, encoded = cv2.imencode(".jpg", grey, list(params))
    assert ok
    return encoded.tobytes()


def with_frame_size(jpeg_bytes: bytes, width: int, height: int) -> bytes:
    """``jpeg_bytes`` with the size in its SOF0 frame header replaced (a forged header)."""
    sof = jpeg_bytes.index(b"\xff\xc0")
    return jpeg_bytes[:sof + 5] + struct.pack(">HH", height, width) + jpeg_bytes[sof + 9:]


def segment(marker: int, payload: bytes) -> bytes:
    """A JPEG marker segment (its length counts itself)."""
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


@pytest.fixture()
def no_decoding(monkeypatch):
    """cv2.imdecode fails the test if called: what is refused must be refused before decoding."""
    def imdecode(*args):
        raise AssertionError("cv2.imdecode called")
    monkeypatch.setattr(cv2, "imdecode", imdecode)


def test_the_png_builder_makes_a_png_cv2_decodes():
    rows = bytes([0, 10, 20, 30, 40, 50, 60, 0, 1, 2, 3, 4, 5, 6])  # 2 rows: filter type 0, 2 RGB pixels
    rgb = compressed_to_rgb8(CompressedImage(format="png", data=png(2, 2, zlib.compress(rows))))
    np.testing.assert_array_equal(rgb, [[[10, 20, 30], [40, 50, 60]], [[1, 2, 3], [4, 5, 6]]])
    assert len(png_bomb()) < 200_000 and encoded_image_size(png_bomb()) == (8000, 8000)


@pytest.mark.parametrize("height, width", [(23, 37), (1, 300), (480, 640)])
def test_encoded_image_size_reads_png_and_jpeg_headers(height, width):
    grey = np.zeros((height, width), np.uint8)
    for ext, params in ((".png", ()), (".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))):  # SOF0, SOF2
        encoded = cv2.imencode(ext, grey, list(params))[1]
        assert encoded_image_size(encoded) == encoded_image_size(encoded.tobytes()) == (width, height)
    rgba = compressed(np.zeros((height, width, 4), np.uint8), ".png").data  # array.array, as in a message
    assert encoded_image_size(rgba) == (width, height)


def test_encoded_image_size_walks_the_jpeg_segments():
    """A frame header inside an APP1 segment (an EXIF thumbnail's) is skipped, as libjpeg skips it."""
    thumbnail = segment(0xC0, bytes([8]) + struct.pack(">HH", 30000, 40000) + bytes([1, 1, 0x11, 0]))
    data = jpeg(16, 24)
    nested = data[:2] + segment(0xE1, b"Exif\x00\x00" + thumbnail) + b"\xff\xff" + data[2:]  # + 2 fill bytes
    assert encoded_image_size(nested) == (24, 16)
    assert compressed_to_rgb8(CompressedImage(format="jpeg", data=nested)).shape == (16, 24, 3)


@pytest.mark.parametrize("data, match", [
    (png(16, 16, b"")[:20], "no image size in its PNG header"),
    (png(0, 16, b""), "no image size in its PNG header"),
    (b"\x89PNG\r\n\x1a\n" + bytes(4) + b"tEXt" + bytes(12), "no image size in its PNG header"),
    (jpeg()[:2] + b"\xff\x00\x00\x10" + jpeg()[2:], "no image size in its JPEG header"),  # libjpeg: garbage
    (jpeg()[:3] + b"\xf0" + jpeg()[4:], "no image size in its JPEG header"),  # an unknown marker
    (with_frame_size(jpeg(), 24, 0), "no image size in its JPEG header"),  # height in a DNL marker
    (jpeg()[:jpeg().index(b"\xff\xc0") + 6], "no image size in its JPEG header"),  # truncated frame header
    (jpeg()[:2] + segment(0xDA, bytes(10)), "no image size in its JPEG header"),  # scan before any frame
    (cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))[1].tobytes(), "neither PNG nor JPEG"),
    (cv2.imencode(".webp", np.zeros((4, 4, 3), np.uint8))[1].tobytes(), "neither PNG nor JPEG"),
    (cv2.imencode(".tiff", np.zeros((4, 4, 3), np.uint8))[1].tobytes(), "neither PNG nor JPEG"),
], ids=["png_truncated", "png_zero_width", "png_no_ihdr", "jpeg_garbage", "jpeg_unknown_marker", "jpeg_dnl",
        "jpeg_truncated", "jpeg_scan_first", "bmp", "webp", "tiff"])
def test_an_image_whose_size_cannot_be_read_from_its_header_is_refused_undecoded(no_decoding, data, match):
    with pytest.raises(ConversionError, match=match):
        encoded_image_size(data)
    with pytest.raises(ConversionError, match=r"^cannot decode CompressedImage \(format 'x', \d+ bytes\): " + match):
        compressed_to_rgb8(CompressedImage(format="x", data=data))


def test_a_png_bomb_is_refused_from_its_header_before_decoding(no_decoding):
    msg = CompressedImage(format="png", data=png_bomb())
    with pytest.raises(ConversionError, match=r"CompressedImage \(format 'png', \d+ bytes\) of 8000x8000 = 64000000 "
                                             r"pixels is above the limit of 16000000 pixels \(max_input_pixels\)"):
        compressed_to_rgb8(msg, max_pixels=16_000_000)


def test_a_jpeg_with_a_forged_frame_size_is_refused_before_decoding(no_decoding):
    forged = CompressedImage(format="jpeg", data=with_frame_size(jpeg(), 30000, 20000))
    with pytest.raises(ConversionError, match="of 30000x20000 = 600000000 pixels is above the limit of 16000000"):
        compressed_to_rgb8(forged, max_pixels=16_000_000)


def test_the_limit_is_inclusive_and_none_means_none():
    msg = compressed(np.zeros((16, 24, 3), np.uint8), ".png")
    assert compressed_to_rgb8(msg, max_pixels=16 * 24).shape == compressed_to_rgb8(msg).shape == (16, 24, 3)
    with pytest.raises(ConversionError, match="of 24x16 = 384 pixels is above the limit of 383 pixels"):
        compressed_to_rgb8(msg, max_pixels=16 * 24 - 1)


def test_a_decoded_size_other_than_the_headers_is_refused(monkeypatch):
    monkeypatch.setattr(cv2, "imdecode", lambda data, flags: np.zeros((9000, 9000, 3), np.uint8))  # a lying header
    with pytest.raises(ConversionError, match=r"decoded to 9000x9000, its header says 24x16"):
        compressed_to_rgb8(CompressedImage(format="jpeg", data=jpeg(16, 24)), max_pixels=1000)


def test_a_raw_image_above_the_limit_is_refused_before_any_conversion():
    huge = Image(height=100_000, width=100_000, encoding="rgb8", step=300_000)  # no data: refused by its fields
    with pytest.raises(ConversionError, match="Image of 100000x100000 = 10000000000 pixels is above the limit of "
                                              "16000000 pixels"):
        image_to_rgb8(huge, max_pixels=16_000_000)
    msg = make_image(random_pixels("rgb8", 4, 6), "rgb8")
    assert image_to_rgb8(msg, max_pixels=24).shape == (4, 6, 3)
    with pytest.raises(ConversionError, match="Image of 6x4 = 24 pixels is above the limit of 23 pixels"):
        image_to_rgb8(msg, max_pixels=23)


@pytest.mark.parametrize("convert, msg", [
    (image_to_rgb8, make_bad(encoding="y" * 1000)),
    (image_to_depth, make_bad(encoding="y" * 1000)),
    (compressed_to_rgb8, CompressedImage(format="y" * 1000, data=b"junk")),
    (compressed_to_rgb8, CompressedImage(format="y" * 1000 + " compressedDepth", data=b"junk")),
], ids=["image", "depth", "compressed", "compressed_depth"])
def test_message_strings_in_errors_are_cut_to_64_characters(convert, msg):
    with pytest.raises(ConversionError) as error:
        convert(msg)
    assert "'" + "y" * 64 + "...'" in str(error.value) and "y" * 65 not in str(error.value)


# ----------------------------------------------------------------------------------- depth_to_image / rgb8


def test_depth_32fc1_keeps_nan_and_turns_inf_to_nan(check_fields):
    depth = np.array([[1.5, np.nan, np.inf], [-np.inf, 0.0, 3.25]], np.float32)
    original = depth.copy()
    header = Header(frame_id="cam_optical")
    msg = depth_to_image(depth, header)
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("32FC1", 2, 3, 12, 0)
    assert msg.header is header
    decoded = np.frombuffer(msg.data, "<f4").reshape(2, 3)
    np.testing.assert_array_equal(decoded, [[1.5, np.nan, np.nan], [np.nan, 0.0, 3.25]])
    np.testing.assert_array_equal(depth, original)  # input untouched


def test_depth_16uc1_millimetres_and_invalid_zero(check_fields):
    depth = np.array([[1.2344, 1.2346, 0.0006, 0.0004, 65.535, 65.536],
                      [-1.0, 0.0, np.nan, np.inf, -np.inf, 0.001]])  # float64 accepted
    msg = depth_to_image(depth, Header(), "16UC1")
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("16UC1", 2, 6, 12, 0)
    decoded = np.frombuffer(msg.data, "<u2").reshape(2, 6)
    np.testing.assert_array_equal(decoded, [[1234, 1235, 1, 0, 65535, 0], [0, 0, 0, 0, 0, 1]])


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_depth_image_round_trip(encoding):
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.1, 60.0, (6, 9)).astype(np.float32)
    out = image_to_array(depth_to_image(depth, Header(), encoding))
    if encoding == "32FC1":
        np.testing.assert_array_equal(out, depth)
    else:
        np.testing.assert_allclose(out / 1000.0, depth, atol=0.0005 + 1e-6)


@pytest.mark.parametrize("depth, encoding, match", [
    (np.ones((2, 2), np.float32), "mono16", r"unsupported depth encoding 'mono16'; supported: 32FC1, 16UC1"),
    (np.ones((2, 2), np.float32), "16UC3", "unsupported depth encoding"),
    (np.ones((2, 2, 1), np.float32), "32FC1", "non-empty"),
    (np.ones((0, 2), np.float32), "32FC1", "non-empty"),
    (np.ones((2, 2), np.uint16), "16UC1", "float"),
])
def test_depth_to_image_errors(depth, encoding, match):
    with pytest.raises(ConversionError, match=match):
        depth_to_image(depth, Header(), encoding)


def test_rgb8_round_trip(check_fields):
    rgb = random_pixels("rgb8", 4, 5)
    msg = rgb8_to_image(rgb, Header(frame_id="cam"))
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 4, 5, 15)
    np.testing.assert_array_equal(image_to_array(msg), rgb)
    np.testing.assert_array_equal(image_to_rgb8(msg), rgb)


@pytest.mark.parametrize("rgb", [np.zeros((4, 5, 3), np.uint16), np.zeros((4, 5), np.uint8),
                                 np.zeros((4, 5, 4), np.uint8), np.zeros((0, 5, 3), np.uint8)])
def test_rgb8_to_image_errors(rgb):
    with pytest.raises(ConversionError, match="rgb must be"):
        rgb8_to_image(rgb, Header())


# ------------------------------------------------------------------------------------------- CameraInfo

FX, FY, CX, CY, TX = 500.0, 510.0, 320.0, 240.0, -25.0


def camera_info(width=640, height=480, scale=1.0, **fields) -> CameraInfo:
    """A 640x480 (times ``scale``) calibration with Tx = -25 px (a stereo right camera)."""
    K = [FX * scale, 0.0, CX * scale, 0.0, FY * scale, CY * scale, 0.0, 0.0, 1.0]
    P = [FX * scale, 0.0, CX * scale, TX * scale, 0.0, FY * scale, CY * scale, 0.0, 0.0, 0.0, 1.0, 0.0]
    info = CameraInfo(width=int(width * scale), height=int(height * scale), k=K, p=P,
                      distortion_model="plumb_bob", d=[0.1, -0.2, 0.001, 0.002, 0.05])
    for name, value in fields.items():
        setattr(info, name, value)
    return info


def expected(fx, fy, cx, cy, tx):
    return (np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], float),
            np.array([[fx, 0, cx, tx], [0, fy, cy, 0], [0, 0, 1, 0]], float))


@pytest.mark.parametrize("info, size, intrinsics", [
    (camera_info(), (640, 480), (FX, FY, CX, CY, TX)),
    (camera_info(binning_x=1, binning_y=0), (640, 480), (FX, FY, CX, CY, TX)),
    (camera_info(binning_x=2, binning_y=2), (320, 240), (FX / 2, FY / 2, CX / 2, CY / 2, TX / 2)),
    (camera_info(binning_x=4, binning_y=2), (160, 240), (FX / 4, FY / 2, CX / 4, CY / 2, TX / 4)),
    (camera_info(roi=RegionOfInterest(x_offset=100, y_offset=50, width=200, height=150)), (200, 150),
     (FX, FY, CX - 100, CY - 50, TX)),
    (camera_info(binning_x=2, binning_y=2, roi=RegionOfInterest(x_offset=100, y_offset=50, width=200, height=150)),
     (100, 75), (FX / 2, FY / 2, (CX - 100) / 2, (CY - 50) / 2, TX / 2)),
    (camera_info(scale=2.0), (640, 480), (FX, FY, CX, CY, TX)),  # a CameraInfo at 2x the image size
    (camera_info(), (1024, 768), (FX * 1.6, FY * 1.6, CX * 1.6, CY * 1.6, TX * 1.6)),
    (camera_info(binning_x=2, binning_y=2), (640, 480), (FX, FY, CX, CY, TX)),  # binned info, full image
    (camera_info(width=1280, height=720), (1282, 720), (FX * 1282 / 1280, FY, CX * 1282 / 1280, CY,
                                                        TX * 1282 / 1280)),  # aspect within 1 %
    (camera_info(roi=RegionOfInterest(x_offset=440, y_offset=330, width=200, height=150)), (200, 150),
     (FX, FY, CX - 440, CY - 330, TX)),  # the ROI in the sensor's bottom-right corner
    (camera_info(width=0, height=0, roi=RegionOfInterest(x_offset=100, y_offset=50, width=200, height=150)),
     (200, 150), (FX, FY, CX - 100, CY - 50, TX)),  # sensor size unknown: the ROI is not checked
], ids=["same", "binning_0_1", "binning_2", "binning_4x2", "roi", "roi_binning", "info_at_2x", "upscaled",
        "binned_info", "aspect_tolerance", "roi_in_the_corner", "roi_unknown_sensor"])
def test_camera_info_to_intrinsics(info, size, intrinsics):
    K, P = camera_info_to_intrinsics(info, *size)
    K_expected, P_expected = expected(*intrinsics)
    assert K.dtype == P.dtype == np.float64
    np.testing.assert_allclose(K, K_expected, rtol=1e-12)
    np.testing.assert_allclose(P, P_expected, rtol=1e-12)


def test_empty_p_falls_back_to_k():
    K, P = camera_info_to_intrinsics(camera_info(p=np.zeros(12)), 320, 240)
    K_expected, P_expected = expected(FX / 2, FY / 2, CX / 2, CY / 2, 0.0)
    np.testing.assert_allclose(K, K_expected)
    np.testing.assert_allclose(P, P_expected)


def test_p_is_used_over_k():
    info = camera_info()
    info.k = np.array([1.0, 0, 2, 0, 1, 3, 0, 0, 1])  # inconsistent K must not affect P
    _, P = camera_info_to_intrinsics(info, 640, 480)
    np.testing.assert_array_equal(P, expected(FX, FY, CX, CY, TX)[1])


@pytest.mark.parametrize("info, size, match", [
    (camera_info(), (640, 360), r"aspect ratios differ: CameraInfo describes a 640x480 image .*, the image is 640x360"),
    (camera_info(binning_x=2), (640, 480), "describes a 320x480 image"),
    (camera_info(width=0, height=0), (640, 480), "empty size"),
    (camera_info(p=np.array([0.0, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1, 0])), (640, 480), "CameraInfo P has invalid fx = 0.0"),
    (camera_info(p=np.array([FX, 0, CX, 0, 0, np.nan, CY, 0, 0, 0, 1, 0])), (640, 480),
     "CameraInfo P has invalid fy = nan"),
    (camera_info(p=np.zeros(12), k=np.zeros(9)), (640, 480), r"CameraInfo K \(P is empty\) has invalid fx"),
    (camera_info(p=np.array([-FX, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1, 0])), (640, 480),
     "CameraInfo P has invalid fx = -500.0"),  # would mirror the cloud
    (camera_info(k=np.array([FX, 0, CX, 0, -FY, CY, 0, 0, 1])), (640, 480),
     "CameraInfo K has invalid fy = -510.0"),  # K is republished too
    (camera_info(p=np.zeros(12), k=np.array([FX, 0, np.nan, 0, FY, CY, 0, 0, 1])), (640, 480),
     r"CameraInfo K \(P is empty\) has invalid cx = nan"),
    (camera_info(p=np.array([FX, 0, CX, 0, 0, FY, np.inf, 0, 0, 0, 1, 0])), (640, 480),
     "CameraInfo P has invalid cy = inf"),
    (camera_info(p=np.array([FX, 0, CX, np.inf, 0, FY, CY, 0, 0, 0, 1, 0])), (640, 480),
     "CameraInfo P has a non-finite entry at row 0, column 3: inf"),
    (camera_info(k=np.array([FX, 0, CX, 0, FY, CY, 0, 0, np.nan])), (640, 480),
     "CameraInfo K has a non-finite entry at row 2, column 2: nan"),
    (camera_info(roi=RegionOfInterest(x_offset=500, y_offset=0, width=200, height=150)), (200, 150),
     r"CameraInfo ROI reaches outside the 640x480 sensor: x_offset 500 \+ 200 > 640"),
    (camera_info(roi=RegionOfInterest(x_offset=0, y_offset=400, width=200, height=150)), (200, 150),
     r"CameraInfo ROI reaches outside the 640x480 sensor: y_offset 400 \+ 150 > 480"),
    (camera_info(roi=RegionOfInterest(width=1280, height=960)), (640, 480),
     r"x_offset 0 \+ 1280 > 640"),  # larger than the sensor: the image would be rescaled
    (camera_info(roi=RegionOfInterest(x_offset=8)), (640, 480), r"x_offset 8 \+ 640 > 640"),  # full width, shifted
], ids=["aspect", "binning_aspect", "empty", "zero_fx", "nan_fy", "empty_p_zero_k", "negative_fx", "negative_k_fy",
        "nan_cx_empty_p", "inf_cy", "inf_tx", "nan_k", "roi_x_outside", "roi_y_outside", "roi_larger",
        "roi_offset_full_width"])
def test_camera_info_to_intrinsics_errors(info, size, match):
    with pytest.raises(ConversionError, match=match):
        camera_info_to_intrinsics(info, *size)


def test_scaled_camera_info_fields(check_fields):
    info = camera_info(binning_x=2, binning_y=2, roi=RegionOfInterest(x_offset=4, y_offset=2, width=600, height=450))
    info.r = np.array([1.0, 0, 0, 0, 0, -1, 0, 1, 0])
    K, P = expected(250.0, 255.0, 158.0, 119.0, -12.5)
    header = Header(frame_id="cam_optical")
    header.stamp.sec = 42
    out = scaled_camera_info(info, K, P, 300, 225, header)
    assert out.header is header and (out.width, out.height) == (300, 225)
    np.testing.assert_array_equal(out.k, K.ravel())
    np.testing.assert_array_equal(out.p, P.ravel())
    np.testing.assert_array_equal(out.r, info.r)
    np.testing.assert_array_equal(out.d, info.d)
    assert out.distortion_model == "plumb_bob"
    assert (out.binning_x, out.binning_y) == (0, 0)
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height, out.roi.do_rectify) == (0, 0, 0, 0, False)
    # It describes itself: reading it back for its own size gives K and P unchanged.
    K_back, P_back = camera_info_to_intrinsics(out, 300, 225)
    np.testing.assert_array_equal(K_back, K)
    np.testing.assert_array_equal(P_back, P)
    # Nothing is shared with the inputs.
    K[0, 0] = 1.0
    info.d[0] = 9.0
    assert out.k[0] == 250.0 and out.d[0] == 0.1


def test_scaled_camera_info_rejects_bad_shapes():
    with pytest.raises(ConversionError, match=r"K must be \(3, 3\) and P \(3, 4\)"):
        scaled_camera_info(camera_info(), np.eye(3), np.eye(3), 640, 480, Header())


# ---------------------------------------------------------------------------------- tools/bench_conversions


def test_bench_conversions_runs_and_prints_every_case(capsys):
    assert bench_conversions.main(["--width", "40", "--height", "30", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "40x30, median of 1 runs"
    cases = [line.rsplit(None, 1) for line in lines[2:-1]]
    assert len(cases) == 11 and all(float(ms) >= 0.0 for _, ms in cases)
    assert {"point_cloud xyzrgb", "depth_to_image 16UC1"} <= {name for name, _ in cases}
    assert cases[-1][0].startswith("naive Python loop xyzrgb")
    assert lines[-1].startswith("vectorised point_cloud xyzrgb is ")


@pytest.mark.parametrize("argv", [["--width", "0"], ["--repeats", "-1"], ["--height", "x"]])
def test_bench_conversions_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as exit_info:
        bench_conversions.parse_args(argv)
    assert exit_info.value.code == 2


# ---------------------------------------------------------------------------------------- image_to_depth


def test_image_to_depth_inverts_depth_to_image_in_both_encodings():
    depth = np.array([[0.5, 1.234, np.nan], [np.inf, 0.0, 65.0]], np.float32)
    header = Header(frame_id="cam")
    metres = image_to_depth(depth_to_image(depth, header, "32FC1"))
    np.testing.assert_array_equal(np.isnan(metres), [[False, False, True], [True, True, False]])
    np.testing.assert_array_equal(metres[0, :2], depth[0, :2])
    millimetres = image_to_depth(depth_to_image(depth, header, "16UC1"))
    np.testing.assert_allclose(millimetres[0, :2], [0.5, 1.234], atol=1e-6)
    assert millimetres[1, 2] == pytest.approx(65.0) and np.isnan(millimetres[1, :2]).all()
    with pytest.raises(ConversionError, match="unsupported depth encoding 'rgb8'"):
        image_to_depth(rgb8_to_image(np.zeros((2, 2, 3), np.uint8), header))
