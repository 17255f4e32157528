"""Image/CompressedImage/CameraInfo <-> numpy conversions on message objects (no DDS, no node)."""
import array

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
    ("8UC3", [10, 20, 30], [10, 20, 30]),
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
], ids=["same", "binning_0_1", "binning_2", "binning_4x2", "roi", "roi_binning", "info_at_2x", "upscaled",
        "binned_info", "aspect_tolerance"])
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
])
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
