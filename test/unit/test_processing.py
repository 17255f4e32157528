"""The node's per-frame path (``ros/processing.py``, image mode of ``ros/processors.py``) on real message objects, with no node and no DDS.

The model is replaced by ``KnownPipeline`` (a known normalised depth per image size) so the decoding,
intrinsics scaling, filtering and packing can be checked against values computed here.
"""
import math

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from test_conversions import png_bomb

from pixel_perfect_ros.inference.pipeline import DepthPrediction
from pixel_perfect_ros.inference.preprocess import processing_size
from pixel_perfect_ros.ros.conversions import ConversionError
from pixel_perfect_ros.ros.parameters import NodeSettings
from pixel_perfect_ros.ros.processing import FrameSettings, nearest_by_stamp
from pixel_perfect_ros.ros.processors import ImageProcessor

HEIGHT, WIDTH = 48, 64
FRAME_ID = "camera_optical"
FX, FY = 100.0, 110.0
STAMP = Time(sec=12, nanosec=345)
STAGES = {"decode_ms", "preprocess_ms", "semantics_ms", "sampling_ms", "postprocess_ms"}


class KnownPipeline:
    """Stands in for ``PixelPerfectDepth``: ``normalised(h, w)`` at the input and at the processing size.

    Args:
        normalised: ``(height, width) -> (height, width) float32`` normalised log-depth.
        target_area: processing area, pixels (the processing size follows ``processing_size``).
        reference: returned as ``metric_reference`` when asked for (stands in for a ``MoGe2Result``).
    """

    def __init__(self, normalised, target_area: int = HEIGHT * WIDTH, reference=None):
        self.normalised, self.target_area, self.reference = normalised, target_area, reference
        self.calls: list[bool] = []  # metric_reference of each call

    def __call__(self, rgb: np.ndarray, metric_reference: bool = False) -> DepthPrediction:
        self.calls.append(metric_reference)
        height, width = rgb.shape[:2]
        return DepthPrediction(depth=self.normalised(height, width),
                               processing_depth=self.normalised(*processing_size(height, width, self.target_area)),
                               timings_ms=dict.fromkeys(("preprocess", "semantics", "sampling", "postprocess"), 1.0),
                               metric_reference=self.reference if metric_reference else None)


def ramp(height: int, width: int) -> np.ndarray:
    """(height, width) float32 normalised depth rising from 0 (left) to 1 (right)."""
    return np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))


def settings(**overrides) -> FrameSettings:
    """Settings of the parameter defaults with ``overrides``."""
    return FrameSettings.of(NodeSettings(**overrides))


def header(stamp: Time = STAMP, frame_id: str = FRAME_ID) -> Header:
    return Header(stamp=stamp, frame_id=frame_id)


def image_msg(pixels: np.ndarray, encoding: str, stamp: Time = STAMP) -> Image:
    """An unpadded little-endian Image of (H, W) or (H, W, C) ``pixels``."""
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    return Image(header=header(stamp), height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                 is_bigendian=0, step=pixels.shape[1] * pixels.itemsize * channels,
                 data=np.ascontiguousarray(pixels).tobytes())


def rgb_msg(height: int = HEIGHT, width: int = WIDTH) -> Image:
    return image_msg(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8), "rgb8")


def camera_info(width: int = WIDTH, height: int = HEIGHT) -> CameraInfo:
    """A pinhole CameraInfo (principal point at the image centre)."""
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return CameraInfo(header=header(), width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[FX, 0.0, cx, 0.0, FY, cy, 0.0, 0.0, 1.0], r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                      p=[FX, 0.0, cx, 0.0, 0.0, FY, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def depth_pixels(msg: Image) -> np.ndarray:
    """(H, W) float32 pixels of an unpadded little-endian 32FC1 image."""
    assert (msg.encoding, msg.is_bigendian, msg.step) == ("32FC1", 0, 4 * msg.width)
    return np.frombuffer(msg.data, "<f4").reshape(msg.height, msg.width)


# ----------------------------------------------------------------------------------------- decoding


def test_relative_depth_is_exp_of_the_model_output_in_every_output():
    processor = ImageProcessor(KnownPipeline(ramp))
    frame = processor.process(rgb_msg(), camera_info(), settings())
    expected = np.exp(ramp(HEIGHT, WIDTH).astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(frame.depth, expected, rtol=1e-6)
    np.testing.assert_array_equal(depth_pixels(frame.depth_msg), frame.depth)
    np.testing.assert_array_equal(frame.normalised, ramp(HEIGHT, WIDTH))
    assert (frame.is_metric, frame.scale_state, frame.flying_pixels_removed) == (False, "", 0)
    assert frame.rgb.shape == (HEIGHT, WIDTH, 3) and frame.rgb.dtype == np.uint8
    assert set(frame.stages_ms) == STAGES and frame.stages_ms["sampling_ms"] == 1.0
    for msg in (frame.header, frame.depth_msg.header, frame.info_msg.header, frame.points_msg.header):
        assert (msg.stamp, msg.frame_id) == (STAMP, FRAME_ID)


def test_fixed_range_decodes_the_inverse_of_its_normalisation_to_metres():
    metres = np.tile(np.linspace(1.0, 8.0, WIDTH, dtype=np.float32), (HEIGHT, 1))
    normalised = ((np.log1p(metres) - math.log1p(1.0)) / (math.log1p(8.0) - math.log1p(1.0))).astype(np.float32)
    processor = ImageProcessor(KnownPipeline(lambda h, w: cv2.resize(normalised, (w, h))))
    frame = processor.process(rgb_msg(), camera_info(), settings(depth_mode="fixed_range", near_m=1.0, far_m=8.0))
    np.testing.assert_allclose(frame.depth, metres, rtol=1e-5)
    assert frame.is_metric


def test_16uc1_output_is_millimetres():
    processor = ImageProcessor(KnownPipeline(lambda h, w: np.zeros((h, w), np.float32)))
    frame = processor.process(rgb_msg(), camera_info(), settings(depth_mode="fixed_range", near_m=1.5, far_m=8.0,
                                                                 output_encoding="16UC1"))
    assert frame.depth_msg.encoding == "16UC1"
    np.testing.assert_array_equal(np.frombuffer(frame.depth_msg.data, "<u2"), 1500)


# --------------------------------------------------------------------------- size, intrinsics, points


@pytest.mark.parametrize(("resolution", "out_h", "out_w"), [("input", HEIGHT, WIDTH), ("processing", 32, 32)])
def test_published_size_and_intrinsics_follow_output_resolution(resolution, out_h, out_w):
    # target_area 32 x 24: the 48 x 64 input halved to 24 x 32, each side rounded to a multiple of 16.
    processor = ImageProcessor(KnownPipeline(ramp, target_area=32 * 24))
    frame = processor.process(rgb_msg(), camera_info(), settings(output_resolution=resolution,
                                                                 points_xyzrgb=True))
    assert frame.depth.shape == frame.normalised.shape == (out_h, out_w)
    np.testing.assert_array_equal(frame.normalised, ramp(out_h, out_w))
    sx, sy = out_w / WIDTH, out_h / HEIGHT
    K = np.array([[FX * sx, 0, (WIDTH - 1) / 2 * sx], [0, FY * sy, (HEIGHT - 1) / 2 * sy], [0, 0, 1]])
    np.testing.assert_allclose(frame.K, K)
    info = frame.info_msg
    assert (info.width, info.height, frame.depth_msg.width, frame.depth_msg.height) == (out_w, out_h, out_w, out_h)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), K)
    np.testing.assert_allclose(np.reshape(info.p, (3, 4))[:, :3], K)
    points = frame.points_msg
    assert (points.width, points.height, [f.name for f in points.fields]) == (out_w, out_h, ["x", "y", "z", "rgb"])
    z = np.frombuffer(points.data, "<f4").reshape(out_h, out_w, 4)[..., 2]
    np.testing.assert_array_equal(z, frame.depth)


def test_points_are_decimated_and_left_out_when_not_wanted():
    processor = ImageProcessor(KnownPipeline(ramp))
    frame = processor.process(rgb_msg(), camera_info(), settings(points_decimation=4))
    assert (frame.points_msg.width, frame.points_msg.height) == (WIDTH // 4, HEIGHT // 4)
    assert processor.process(rgb_msg(), camera_info(), settings(), want_points=False).points_msg is None
    frame = processor.process(rgb_msg(), camera_info(), settings(publish_points=False))
    assert frame.points_msg is None and frame.depth_msg.width == WIDTH


def test_without_camera_info_the_intrinsics_come_from_moge2():
    class Reference:  # the part of a MoGe2Result used: normalised intrinsics
        intrinsics = np.array([[0.8, 0.0, 0.5], [0.0, 1.1, 0.5], [0.0, 0.0, 1.0]], np.float32)

    pipeline = KnownPipeline(ramp, reference=Reference())
    frame = ImageProcessor(pipeline).process(rgb_msg(), None, settings(intrinsics_source="moge2"))
    K = np.array([[0.8 * WIDTH, 0, 0.5 * WIDTH - 0.5], [0, 1.1 * HEIGHT, 0.5 * HEIGHT - 0.5], [0, 0, 1]])
    np.testing.assert_allclose(frame.K, K, rtol=1e-6)
    np.testing.assert_allclose(np.reshape(frame.info_msg.k, (3, 3)), K, rtol=1e-6)
    assert frame.info_msg.distortion_model == "plumb_bob" and pipeline.calls == [True]


# ------------------------------------------------------------------------------- filter, bad input


def test_flying_pixel_filter_removes_the_mixed_column_of_a_step_edge():
    step = np.where(np.arange(WIDTH) < WIDTH // 2, 2.0, 4.0).astype(np.float32)
    step[WIDTH // 2 - 1] = 3.0  # one column of mixed pixels between the two planes
    normalised = ((np.log1p(np.tile(step, (HEIGHT, 1))) - math.log1p(1.0)) / (math.log1p(5.0) - math.log1p(1.0)))
    normalised = normalised.astype(np.float32)
    processor = ImageProcessor(KnownPipeline(lambda h, w: normalised))
    frame = processor.process(rgb_msg(), camera_info(), settings(depth_mode="fixed_range", near_m=1.0, far_m=5.0,
                                                                 flying_pixel_threshold=0.1))
    assert frame.flying_pixels_removed == HEIGHT
    assert np.isnan(frame.depth[:, WIDTH // 2 - 1]).all()
    assert np.isfinite(np.delete(frame.depth, WIDTH // 2 - 1, axis=1)).all()
    assert np.isnan(depth_pixels(frame.depth_msg)[:, WIDTH // 2 - 1]).all()


def test_bad_image_or_camera_info_raises_conversion_error_before_the_model():
    pipeline = KnownPipeline(ramp)
    bad = rgb_msg()
    bad.encoding = "yuv422_weird"
    with pytest.raises(ConversionError, match="yuv422_weird"):
        ImageProcessor(pipeline).process(bad, camera_info(), settings())
    with pytest.raises(ConversionError, match="aspect ratios differ"):
        ImageProcessor(pipeline).process(rgb_msg(), camera_info(WIDTH, WIDTH), settings())
    assert pipeline.calls == []


@pytest.mark.parametrize("height, width", [(1, 100_000), (100_000, 1)])
def test_an_extreme_aspect_ratio_is_refused_before_the_model(height, width):
    # processing_size rounds each side to >= 16 px: 1x100000 at target_area 3072 would run at 16x17520.
    pipeline = KnownPipeline(ramp)
    with pytest.raises(ConversionError, match=r"aspect ratio too extreme: a .* image would run at .* pixels, above "
                                              r"2 x target_area 3072"):
        ImageProcessor(pipeline).process(rgb_msg(height, width), camera_info(width, height), settings())
    assert pipeline.calls == []


def test_images_above_max_input_pixels_are_refused_before_the_model():
    pipeline = KnownPipeline(ramp)
    processor = ImageProcessor(pipeline)
    assert processor.process(rgb_msg(), camera_info(), settings(max_input_pixels=HEIGHT * WIDTH)).depth.shape == (
        HEIGHT, WIDTH)
    with pytest.raises(ConversionError, match="Image of 64x48 = 3072 pixels is above the limit of 3071 pixels"):
        processor.process(rgb_msg(), camera_info(), settings(max_input_pixels=HEIGHT * WIDTH - 1))
    bomb = CompressedImage(header=header(), format="png", data=png_bomb())
    with pytest.raises(ConversionError, match="8000x8000 = 64000000 pixels is above the limit of 16000000 pixels"):
        processor.process(bomb, camera_info(8000, 8000), settings())  # the default max_input_pixels
    assert pipeline.calls == [False]


def test_a_push_refused_for_its_size_returns_the_reason():
    finished = []
    reason = ImageProcessor(KnownPipeline(ramp)).push(
        "key", rgb_msg(), camera_info(), settings(max_input_pixels=100), lambda *frame: finished.append(frame))
    assert "above the limit of 100 pixels" in reason and finished == []


def test_8uc3_is_read_as_bgr8():
    bgr = np.random.default_rng(2).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame = ImageProcessor(KnownPipeline(ramp)).process(image_msg(bgr, "8UC3"), camera_info(), settings())
    np.testing.assert_array_equal(frame.rgb, bgr[..., ::-1])


def test_nonfinite_32fc1_pixels_are_counted():
    intensity = np.random.default_rng(1).random((HEIGHT, WIDTH), dtype=np.float32)
    intensity[0, :5], intensity[1, :3] = np.nan, np.inf
    processor = ImageProcessor(KnownPipeline(ramp))
    assert processor.process(image_msg(intensity, "32FC1"), camera_info(), settings()).nonfinite_pixels == 8
    assert processor.process(rgb_msg(), camera_info(), settings()).nonfinite_pixels == 0


# ----------------------------------------------------------------------------------------- sparse_topic


def test_sparse_topic_aligns_to_the_given_sensor_depth_and_falls_back_without_it():
    metric = np.expm1(0.9 * ramp(HEIGHT, WIDTH) + 0.3).astype(np.float32)
    sensor = np.zeros((HEIGHT, WIDTH), np.uint16)
    sensor[::3, ::3] = np.round(metric * 1000)[::3, ::3]  # a sparse grid of millimetres
    processor = ImageProcessor(KnownPipeline(ramp))
    sparse_settings = settings(depth_mode="sparse_topic", sparse_min_points=20)

    frame = processor.process(rgb_msg(), camera_info(), sparse_settings)  # no sensor depth yet
    assert (frame.is_metric, frame.scale_state, frame.sparse_error) == (False, "relative_fallback", "")
    np.testing.assert_allclose(frame.depth, np.exp(ramp(HEIGHT, WIDTH)), rtol=1e-6)

    frame = processor.process(rgb_msg(), camera_info(), sparse_settings, sparse=image_msg(sensor, "16UC1"))
    assert (frame.is_metric, frame.scale_state) == (True, "fitted")
    np.testing.assert_allclose(frame.depth, metric, rtol=0.01)

    frame = processor.process(rgb_msg(), camera_info(), sparse_settings)  # the fit is kept across frames
    assert (frame.is_metric, frame.scale_state) == (True, "held")
    np.testing.assert_allclose(frame.depth, metric, rtol=0.01)


def test_an_unreadable_sparse_depth_is_reported_and_decodes_as_without_one():
    processor = ImageProcessor(KnownPipeline(ramp))
    bad = image_msg(np.ones((HEIGHT, WIDTH, 3), np.uint8), "rgb8")
    frame = processor.process(rgb_msg(), camera_info(), settings(depth_mode="sparse_topic"), sparse=bad)
    assert "unsupported depth encoding 'rgb8'" in frame.sparse_error
    assert (frame.is_metric, frame.scale_state) == (False, "relative_fallback")


def test_a_sparse_depth_of_another_aspect_ratio_is_reported_and_decodes_as_without_one():
    sensor = np.full((HEIGHT, HEIGHT), 2000, np.uint16)  # square: stretched over the 64x48 image it would be wrong
    processor = ImageProcessor(KnownPipeline(ramp))
    sparse_settings = settings(depth_mode="sparse_topic", sparse_min_points=20)
    frame = processor.process(rgb_msg(), camera_info(), sparse_settings, sparse=image_msg(sensor, "16UC1"))
    assert frame.sparse_error == "aspect ratios differ: sparse_depth is 48x48, the image is 64x48"
    assert (frame.is_metric, frame.scale_state) == (False, "relative_fallback")
    np.testing.assert_allclose(frame.depth, np.exp(ramp(HEIGHT, WIDTH)), rtol=1e-6)

    half = np.full((HEIGHT // 2, WIDTH // 2), 2000, np.uint16)  # same aspect ratio, half the resolution: used
    frame = processor.process(rgb_msg(), camera_info(), sparse_settings, sparse=image_msg(half, "16UC1"))
    assert (frame.sparse_error, frame.is_metric, frame.scale_state) == ("", True, "fitted")


def test_nearest_by_stamp_takes_the_nearest_within_the_max_age():
    messages = [Image(header=header(Time(sec=10, nanosec=ns))) for ns in (0, 400, 1000)]
    base_ns = 10 * 1_000_000_000
    assert nearest_by_stamp(messages, base_ns + 750, max_age_ns=500) is messages[2]
    assert nearest_by_stamp(messages, base_ns + 650, max_age_ns=500) is messages[1]
    assert nearest_by_stamp(messages, base_ns + 1300, max_age_ns=300) is messages[2]  # inclusive
    assert nearest_by_stamp(messages, base_ns + 1301, max_age_ns=300) is None
    assert nearest_by_stamp(messages, base_ns - 1, max_age_ns=0) is None
    assert nearest_by_stamp([], base_ns, max_age_ns=10**9) is None
