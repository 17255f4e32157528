"""depth_node over real rclpy and DDS: camera frames in; depth image, CameraInfo, point cloud, status and
diagnostics out, with small random-weight checkpoints in the official formats (``tiny_checkpoints``).

Every test runs the node and a probe node in their own rclpy context on a random domain id
(``ros_harness``) and checks values, not only that messages arrive. A few tests replace the node's
model with ``FixedPipeline`` to feed a known normalised depth through the real decoding, intrinsics
scaling, point-cloud packing and DDS path; each says why. The model itself is covered by the parity
tests (test/unit/test_pipeline.py).
"""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import FRAME_ID, camera_info, connect, result_of, rgb_image, wait_for
from sensor_msgs.msg import CompressedImage, Image, PointField

from pixel_perfect_ros.geometry.decoding import make_decoder
from pixel_perfect_ros.geometry.projection import pixel_intrinsics
from pixel_perfect_ros.inference.pipeline import DepthPrediction
from pixel_perfect_ros.inference.preprocess import processing_size

HEIGHT, WIDTH = 48, 64
"""Default test image size; the harness's target_area (64 * 48) keeps it as the processing size."""
DEPTH_NODE = Path(sys.executable).parent / "depth_node"
TEST_DIR = Path(__file__).resolve().parents[1]
DIAGNOSTIC_KEYS = {
    "rate_hz", "mean_decode_ms", "mean_preprocess_ms", "mean_semantics_ms", "mean_sampling_ms",
    "mean_postprocess_ms", "mean_publish_ms", "mean_total_ms", "frames_received", "frames_processed",
    "frames_dropped", "frames_rejected", "frames_idle", "frames_lost", "frames_failed", "model", "backend", "backend_requested",
    "backend_fallback", "device", "dtype", "steps", "uncertainty_samples", "depth_mode", "is_metric",
}
"""/diagnostics values (docs/node.md): rate, mean latency per stage, counters, model and backend (running,
requested, why they differ), and the node's device, dtype, steps, uncertainty_samples, depth_mode and is_metric."""
STAGES_MS = ("decode_ms", "preprocess_ms", "semantics_ms", "sampling_ms", "postprocess_ms", "publish_ms")


# ------------------------------------------------------------------------------------------- helpers


def seeded_rgb(height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8 RGB noise."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_msg(pixels: np.ndarray, encoding: str) -> Image:
    """An unpadded little-endian Image of ``pixels`` ((H, W) or (H, W, C)) on ``FRAME_ID``, not stamped."""
    image = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=0,
                  step=pixels.shape[1] * pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1),
                  data=np.ascontiguousarray(pixels).tobytes())
    image.header.frame_id = FRAME_ID
    return image


def start(ros, checkpoints, *topics: str, probe_kwargs: dict | None = None, **parameters):
    """The depth node with ``parameters`` and a probe listening to ``topics``, matched over DDS."""
    node = ros.depth_node(checkpoints, **parameters)
    probe = ros.probe(*topics, **(probe_kwargs or {}))
    connect(probe, node, *topics)
    return node, probe


def send_msgs(probe, image, info) -> Time:
    """Stamp ``image`` and ``info`` (None: send no CameraInfo) with now and publish them; returns the stamp."""
    stamp = probe.now()
    image.header.stamp = stamp
    if info is not None:
        info.header.stamp = stamp
    probe.send(image, info)
    return stamp


def send_frame(probe, rgb: np.ndarray, info=None) -> Time:
    """Publish an rgb8 frame and its CameraInfo (default: ``camera_info`` of the image size)."""
    height, width = rgb.shape[:2]
    return send_msgs(probe, rgb_image(rgb, Time()), info or camera_info(width, height, Time()))


def send_until_processed(probe, rgb: np.ndarray, timeout: float = 60.0, period_s: float = 1.0) -> Time:
    """Send ``rgb`` frames (a new stamp every ``period_s``) until the node publishes the status of one;
    returns that frame's stamp. A node in another process may still be matching the probe's output
    subscriptions when the first frame arrives (a lazy node then skips it), and best-effort input may drop it.
    """
    sent: list[Time] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sent.append(send_frame(probe, rgb))
        resend = time.monotonic() + period_s
        while time.monotonic() < resend:
            processed = [stamp for stamp in sent if probe.for_stamp("depth/status", stamp)]
            if processed:
                return processed[0]
            time.sleep(0.01)
    raise AssertionError(f"no status within {timeout} s for any of {len(sent)} frames")


def outputs(probe, stamp: Time, *topics: str, timeout: float = 20.0) -> list:
    """The messages on ``topics`` for the frame stamped ``stamp`` (waits for all of them)."""
    wait_for(lambda: all(probe.for_stamp(topic, stamp) is not None for topic in topics), timeout,
             f"{', '.join(topics)} of the frame stamped {stamp.sec}.{stamp.nanosec:09d}")
    return [probe.for_stamp(topic, stamp) for topic in topics]


def stamp_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def depth_array(msg: Image) -> np.ndarray:
    """(H, W) pixels of a depth image (float32 for 32FC1, uint16 for 16UC1), after checking its layout."""
    dtype = np.dtype({"32FC1": "<f4", "16UC1": "<u2"}[msg.encoding])
    row = msg.width * dtype.itemsize
    assert (msg.is_bigendian, msg.step, len(msg.data)) == (0, row, row * msg.height)
    return np.frombuffer(msg.data, dtype).reshape(msg.height, msg.width)


def cloud_points(msg, with_rgb: bool = False) -> np.ndarray:
    """(height, width) structured x, y, z (, rgb) of an organized cloud, after checking its layout."""
    names = ["x", "y", "z"] + (["rgb"] if with_rgb else [])
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        (name, 4 * i, PointField.FLOAT32, 1) for i, name in enumerate(names)]
    assert (msg.point_step, msg.row_step) == (4 * len(names), 4 * len(names) * msg.width)
    assert (msg.is_dense, msg.is_bigendian, len(msg.data)) == (False, False, msg.row_step * msg.height)
    dtype = np.dtype({"names": names, "formats": ["<f4"] * len(names), "offsets": [4 * i for i in range(len(names))],
                      "itemsize": msg.point_step})
    return np.frombuffer(msg.data, dtype).reshape(msg.height, msg.width)


def diagnostic(msg) -> tuple[DiagnosticStatus, dict[str, str]]:
    """The node's status in a DiagnosticArray and its key/value pairs."""
    (status,) = msg.status
    return status, {kv.key: kv.value for kv in status.values}


def wait_for_diagnostic(probe, predicate, timeout: float = 10.0, what: str = "a diagnostic"):
    """The first /diagnostics status (with its values) for which ``predicate(status, values)`` holds."""
    def found():
        return next((d for d in map(diagnostic, probe.messages("/diagnostics")) if predicate(*d)), None)
    wait_for(lambda: found() is not None, timeout, what)
    return found()


def relative_depth(node, rgb: np.ndarray) -> np.ndarray:
    """What depth_mode relative publishes for ``rgb``: exp of the node's own model output (fixed seed)."""
    return np.exp(node.pipeline(rgb).depth.astype(np.float64)).astype(np.float32)


def fixed_range_normalised(depth_m: np.ndarray, near_m: float, far_m: float) -> np.ndarray:
    """The normalised log-depth that depth_mode fixed_range decodes to ``depth_m`` (the decoding inverted)."""
    q2, q98 = math.log1p(near_m), math.log1p(far_m)
    return ((np.log1p(depth_m) - q2) / (q98 - q2)).astype(np.float32)


class FixedPipeline:
    """Stands in for the node's ``PixelPerfectDepth``: a known normalised depth for every image.

    Has the attributes the node reads and sets (steps, target_area, seed, device, metric_model).

    Args:
        normalised: ``(height, width) -> (height, width) float32`` normalised log-depth of an image of
            that size; called for the input size and for the processing size.
        like: the pipeline it replaces, whose attributes it takes over.
    """

    def __init__(self, normalised, like):
        self.normalised = normalised
        self.steps, self.target_area, self.seed, self.device = like.steps, like.target_area, like.seed, like.device
        self.metric_model = None

    def __call__(self, rgb: np.ndarray, metric_reference: bool = False) -> DepthPrediction:
        height, width = rgb.shape[:2]
        return DepthPrediction(depth=self.normalised(height, width),
                               processing_depth=self.normalised(*processing_size(height, width, self.target_area)),
                               timings_ms=dict.fromkeys(("preprocess", "semantics", "sampling", "postprocess"), 0.0))


class Camera:
    """Publishes ``frames`` frames (``image`` and ``info``, freshly stamped) every ``period_s`` from a
    thread of its own, like a camera driver, whatever the executor does; ``sent`` lists their stamps."""

    def __init__(self, probe, image: Image, info, frames: int, period_s: float = 1 / 30):
        self.sent: list[Time] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(probe, image, info, frames, period_s), daemon=True)
        self.thread.start()

    def _run(self, probe, image, info, frames, period_s) -> None:
        start_s = time.monotonic()
        for i in range(frames):
            if self._stop.wait(max(0.0, start_s + i * period_s - time.monotonic())):  # pacing, not synchronisation
                return
            self.sent.append(send_msgs(probe, image, info))

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)


def rss_bytes() -> int:
    """Resident set size of this process (test, node and DDS all run in it)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------- outputs and layout


def test_every_output_carries_the_source_header_and_the_model_depth(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/camera_info", "depth/points", "depth/status")
    rgb = seeded_rgb()
    stamp = Time(sec=1234, nanosec=567_890_123)
    image = rgb_image(rgb, stamp, frame_id="left_camera_optical_frame")
    probe.send(image, camera_info(WIDTH, HEIGHT, stamp, frame_id="left_camera_optical_frame"))

    depth_msg, info, cloud, status = outputs(probe, stamp, "depth/image", "depth/camera_info", "depth/points",
                                             "depth/status")
    for msg in (depth_msg, info, cloud, status):
        assert (msg.header.stamp, msg.header.frame_id) == (stamp, "left_camera_optical_frame")
    assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", HEIGHT, WIDTH)
    assert (info.height, info.width, cloud.height, cloud.width) == (HEIGHT, WIDTH, HEIGHT, WIDTH)
    assert (status.output_height, status.output_width) == (HEIGHT, WIDTH)
    depth = depth_array(depth_msg)
    assert np.isfinite(depth).all() and (depth > 0).all()
    np.testing.assert_allclose(depth, relative_depth(node, rgb), rtol=1e-6)
    np.testing.assert_array_equal(cloud_points(cloud)["z"], depth)


def test_16uc1_is_the_32fc1_depth_in_rounded_millimetres(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image")
    rgb = seeded_rgb()
    (metres,) = outputs(probe, send_frame(probe, rgb), "depth/image")
    assert node.set_parameters([Parameter("output_encoding", value="16UC1")])[0].successful
    (millimetres,) = outputs(probe, send_frame(probe, rgb), "depth/image")

    assert (millimetres.encoding, millimetres.height, millimetres.width) == ("16UC1", HEIGHT, WIDTH)
    depth = depth_array(metres)
    expected = np.floor(depth * np.float32(1000.0) + np.float32(0.5))  # float32, rounding half up
    invalid = (expected < 1) | (expected > 65535)  # 0 mm, or beyond 16 bits (the random model goes that far)
    np.testing.assert_array_equal(depth_array(millimetres), np.where(invalid, 0, expected).astype(np.uint16))


# Input image, its CameraInfo (and changes to it), target_area, output_resolution -> the depth image size,
# processing size and the depth CameraInfo's fx, fy, cx, cy, Tx: hand-computed. camera_info() gives
# fx 100, fy 110 and the principal point at the centre of the size it describes, ((w-1)/2, (h-1)/2).
INTRINSICS_CASES = {
    "input resolution": ((64, 48), (64, 48), {}, 64 * 48, "input", (64, 48), (64, 48), (100, 110, 31.5, 23.5, 0)),
    "input resolution, smaller processing": (
        (64, 48), (64, 48), {}, 768, "input", (64, 48), (32, 32), (100, 110, 31.5, 23.5, 0)),
    # processing_size(60, 80, 3072) = (48, 64): x 0.8 both ways
    "processing resolution": ((80, 60), (80, 60), {}, 3072, "processing", (64, 48), (64, 48), (80, 88, 31.6, 23.6, 0)),
    # processing_size(50, 100, 3072) = (32, 80): x 0.8 and x 0.64; a right stereo camera's Tx scales with fx
    "processing resolution, anisotropic, stereo Tx": (
        (100, 50), (100, 50), {"tx": -10.0}, 3072, "processing", (80, 32), (80, 32), (80, 70.4, 39.6, 15.68, -8)),
    "binning 2": ((64, 48), (128, 96), {"binning": 2}, 3072, "input", (64, 48), (64, 48), (50, 55, 31.75, 23.75, 0)),
    # ROI of 64x48 at (16, 8) of a 128x96 sensor: the principal point (63.5, 47.5) moves by (-16, -8)
    "roi": (
        (64, 48), (128, 96), {"roi": (16, 8, 64, 48)}, 3072, "input", (64, 48), (64, 48), (100, 110, 47.5, 39.5, 0)),
    # CameraInfo of 160x120 for a 64x48 image (same aspect): x 0.4; then processing_size(48, 64, 768) = (32, 32)
    "CameraInfo of another resolution, same aspect": (
        (64, 48), (160, 120), {}, 768, "processing", (32, 32), (32, 32), (20, 44 * 32 / 48, 15.9, 23.8 * 32 / 48, 0)),
}


@pytest.mark.parametrize("case", INTRINSICS_CASES)
def test_depth_camera_info_is_scaled_to_the_depth_image(ros, tiny_checkpoints, case):
    image_wh, info_wh, changes, area, resolution, depth_wh, processing_wh, (fx, fy, cx, cy, tx) = INTRINSICS_CASES[case]
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/camera_info", "depth/status",
                        target_area=area, output_resolution=resolution)
    info_in = camera_info(*info_wh, Time())
    info_in.d = [0.1, -0.2, 0.001, 0.002, 0.05]
    info_in.p[3] = changes.get("tx", 0.0)
    info_in.binning_x = info_in.binning_y = changes.get("binning", 0)
    if "roi" in changes:
        (info_in.roi.x_offset, info_in.roi.y_offset, info_in.roi.width, info_in.roi.height) = changes["roi"]
    stamp = send_frame(probe, seeded_rgb(image_wh[1], image_wh[0]), info_in)

    depth, info, status = outputs(probe, stamp, "depth/image", "depth/camera_info", "depth/status")
    assert (depth.width, depth.height) == depth_wh
    assert (info.width, info.height) == depth_wh
    assert (status.output_width, status.output_height) == depth_wh
    assert (status.processing_width, status.processing_height) == processing_wh
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], rtol=1e-12)
    np.testing.assert_allclose(np.reshape(info.p, (3, 4)), [[fx, 0, cx, tx], [0, fy, cy, 0], [0, 0, 1, 0]], rtol=1e-12)
    assert (info.binning_x, info.binning_y) == (0, 0)
    assert (info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height, info.roi.do_rectify) == (
        0, 0, 0, 0, False)
    assert (info.distortion_model, list(info.d), list(info.r)) == ("plumb_bob", list(info_in.d), list(info_in.r))


# A tilted plane n . X = d in the camera optical frame: z on pixel (v, u)'s ray is d / (n . ray).
PLANE_NORMAL, PLANE_D_M = (0.2, -0.3, 1.0), 2.5


def plane_depth_m(height: int, width: int, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(height, width) float64 z, metres, of the plane seen through the given pinhole intrinsics."""
    u, v = np.arange(width)[None, :], np.arange(height)[:, None]
    a, b, c = PLANE_NORMAL
    return PLANE_D_M / (a * (u - cx) / fx + b * (v - cy) / fy + c)


@pytest.mark.parametrize("image_hw, resolution, decimation, xyzrgb, depth_hw", [
    ((48, 64), "input", 2, True, (48, 64)),
    ((60, 80), "processing", 1, False, (48, 64)),  # processing_size(60, 80, 3072) = (48, 64)
])
def test_points_back_project_an_analytic_plane(ros, tiny_checkpoints, image_hw, resolution, decimation, xyzrgb,
                                               depth_hw):
    """Every point of depth/points lies where the published P puts it, on the plane the depth encodes.

    The model is replaced (FixedPipeline) because checking the back-projection needs a depth known at
    every pixel, which a random-weight model does not give; the normalised depth of a tilted plane goes
    through the real fixed_range decoding, intrinsics scaling, cloud packing and DDS.
    """
    near_m, far_m = 1.0, 5.0
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/camera_info", "depth/points",
                        depth_mode="fixed_range", near_m=near_m, far_m=far_m, output_resolution=resolution,
                        points_decimation=decimation, points_xyzrgb=xyzrgb)
    height, width = image_hw
    fx, fy, cx, cy = 100.0, 110.0, (width - 1) / 2, (height - 1) / 2  # camera_info()'s

    def plane_at(h: int, w: int) -> np.ndarray:  # the plane in an h x w image (image_proc's resize convention)
        sx, sy = w / width, h / height
        return plane_depth_m(h, w, fx * sx, fy * sy, cx * sx, cy * sy)

    node.pipeline = FixedPipeline(lambda h, w: fixed_range_normalised(plane_at(h, w), near_m, far_m), node.pipeline)
    rgb = seeded_rgb(height, width)
    depth_msg, info, cloud_msg = outputs(probe, send_frame(probe, rgb), "depth/image", "depth/camera_info",
                                         "depth/points")

    depth = depth_array(depth_msg)
    assert depth.shape == depth_hw
    np.testing.assert_allclose(depth, plane_at(*depth_hw), rtol=1e-5)
    cloud = cloud_points(cloud_msg, with_rgb=xyzrgb)
    assert (cloud_msg.height, cloud_msg.width) == (-(-depth_hw[0] // decimation), -(-depth_hw[1] // decimation))
    P = np.reshape(info.p, (3, 4))
    u = np.arange(0, depth_hw[1], decimation)[None, :]  # full-resolution pixel of each point
    v = np.arange(0, depth_hw[0], decimation)[:, None]
    z = depth[::decimation, ::decimation]
    np.testing.assert_array_equal(cloud["z"], z)
    np.testing.assert_allclose(cloud["x"], (u - P[0, 2]) * z / P[0, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cloud["y"], (v - P[1, 2]) * z / P[1, 1], rtol=1e-5, atol=1e-6)
    a, b, c = PLANE_NORMAL
    np.testing.assert_allclose(a * cloud["x"] + b * cloud["y"] + c * cloud["z"], PLANE_D_M, rtol=1e-5)
    if xyzrgb:  # 0x00RRGGBB of each point's pixel, read as float32
        r, g, b = (rgb[::decimation, ::decimation, i].astype(np.uint32) for i in range(3))
        np.testing.assert_array_equal(cloud["rgb"].view("<u4"), (r << 16) | (g << 8) | b)


def test_invalid_depth_is_nan_in_32fc1_and_zero_in_16uc1(ros, tiny_checkpoints):
    """Invalid depth is NaN in 32FC1 (never 0: that is a point at the camera) and 0 in 16UC1.

    The model is replaced (FixedPipeline) because a random-weight model does not produce invalid or
    out-of-range depth on demand; decoding, encoding and packing are real.
    """
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/points", depth_mode="fixed_range",
                        near_m=0.0, far_m=10.0)
    n = np.full((HEIGHT, WIDTH), 0.5, dtype=np.float32)  # exp(0.5 log 11) - 1 = sqrt(11) - 1 = 2.3166 m
    invalid = np.zeros((HEIGHT, WIDTH), dtype=bool)
    for row, value in enumerate((np.nan, np.inf, -np.inf, -0.2, 0.0)):  # n <= 0 decodes to <= 0 m with near 0
        n[4 * row:4 * row + 4, :4] = value
        invalid[4 * row:4 * row + 4, :4] = True
    n[20:24, :4] = 2.5  # 11 ** 2.5 - 1 = 400.3 m: valid, beyond 16UC1's 65.535 m
    n[24:28, :4] = 1e-5  # 2.4e-5 m: valid, rounds to 0 mm
    node.pipeline = FixedPipeline(lambda h, w: n, node.pipeline)

    metres_msg, cloud_msg = outputs(probe, send_frame(probe, seeded_rgb()), "depth/image", "depth/points")
    metres = depth_array(metres_msg)
    np.testing.assert_array_equal(np.isnan(metres), invalid)
    assert np.isfinite(metres[~invalid]).all() and (metres[~invalid] > 0).all()
    np.testing.assert_allclose(metres[30:, 4:], math.sqrt(11) - 1, rtol=1e-6)
    np.testing.assert_allclose(metres[20:24, :4], 11 ** 2.5 - 1, rtol=1e-5)
    points = cloud_points(cloud_msg)
    for axis in "xyz":
        np.testing.assert_array_equal(np.isnan(points[axis]), invalid)

    assert node.set_parameters([Parameter("output_encoding", value="16UC1")])[0].successful
    (millimetres_msg,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/image")
    millimetres = depth_array(millimetres_msg)
    zero = invalid.copy()
    zero[20:28, :4] = True
    np.testing.assert_array_equal(millimetres == 0, zero)
    assert (millimetres[~zero] == 2317).all()


# --------------------------------------------------------------------------------- status, diagnostics


def test_status_and_diagnostics_describe_model_settings_latency_and_counters(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "/diagnostics", steps=3)
    rgb = seeded_rgb(60, 80)  # processing_size(60, 80, 3072) = (48, 64)
    for _ in range(2):
        stamp = send_frame(probe, rgb)
        (status,) = outputs(probe, stamp, "depth/status")

    model_id = "ppd.pth + depth_anything_v2_vitl.pth (da2)"
    assert (status.model_id, status.backend, status.device, status.dtype, status.steps) == (
        model_id, "torch", "cpu", "fp32", 3)
    assert (status.processing_width, status.processing_height, status.output_width, status.output_height) == (
        64, 48, 80, 60)
    assert (status.depth_mode, status.is_metric) == ("relative", False)
    assert list(status.decoding_parameter_names) == ["scale", "shift", "offset"]
    assert list(status.decoding_parameter_values) == [1.0, 0.0, 0.0]
    stages = [getattr(status, stage) for stage in STAGES_MS]
    assert all(math.isfinite(ms) and ms >= 0 for ms in stages)
    assert status.sampling_ms > 0 and status.total_ms >= sum(stages) - 1e-3
    assert 0 <= status.age_ms < 60_000
    assert (status.frames_received, status.frames_processed, status.frames_dropped, status.frames_rejected) == (
        2, 2, 0, 0)

    level, values = wait_for_diagnostic(probe, lambda s, v: v.get("frames_processed") == "2",
                                        what="a diagnostic counting both frames")
    assert set(values) == DIAGNOSTIC_KEYS
    assert (level.level, level.message, level.hardware_id) == (DiagnosticStatus.OK, "running", model_id)
    assert level.name.endswith("depth_node: depth")
    assert {key: values[key] for key in ("frames_received", "frames_dropped", "frames_rejected", "frames_failed")} == {
        "frames_received": "2", "frames_dropped": "0", "frames_rejected": "0", "frames_failed": "0"}
    assert (values["model"], values["backend"], values["device"], values["dtype"], values["steps"]) == (
        model_id, "torch", "cpu", "fp32", "3")
    assert (values["depth_mode"], values["is_metric"]) == ("relative", "False")
    assert float(values["rate_hz"]) >= 0
    means = [float(values[f"mean_{stage}"]) for stage in (*STAGES_MS, "total_ms")]
    assert all(math.isnan(ms) or ms >= 0 for ms in means)  # NaN: no frame in that 1 s window


def test_inference_failure_is_an_error_diagnostic_and_the_node_goes_on(ros, tiny_checkpoints):
    """The model is replaced (FixedPipeline) by one that raises on the first frame: a real model does not fail."""
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "/diagnostics")
    calls = []

    def normalised(height, width):
        calls.append((height, width))
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return np.zeros((height, width), dtype=np.float32)

    node.pipeline = FixedPipeline(normalised, node.pipeline)
    failed = send_frame(probe, seeded_rgb())
    level, values = wait_for_diagnostic(probe, lambda s, v: s.level == DiagnosticStatus.ERROR,
                                        what="an ERROR diagnostic")
    assert level.message == "1 frames failed in inference" and values["frames_failed"] == "1"
    (status,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/status")
    assert (status.frames_received, status.frames_processed) == (2, 1)
    assert probe.for_stamp("depth/image", failed) is None


# ----------------------------------------------------------------------------------------- parameters


def test_parameters_change_at_run_time_and_bad_values_are_refused_with_a_reason(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status")
    client = AsyncParameterClient(probe, "depth_node")
    assert client.wait_for_services(timeout_sec=20.0)

    def set_parameter(name: str, value):
        (result,) = result_of(client.set_parameters([Parameter(name, value=value)])).results
        return result

    for name, value in (("depth_mode", "fixed_range"), ("far_m", 20.0), ("near_m", 1.0), ("steps", 3)):
        result = set_parameter(name, value)
        assert result.successful, (name, result.reason)
    rgb = seeded_rgb()
    depth_msg, status = outputs(probe, send_frame(probe, rgb), "depth/image", "depth/status")
    assert (status.depth_mode, status.is_metric, status.steps) == ("fixed_range", True, 3)
    assert list(status.decoding_parameter_names) == ["near_m", "far_m", "scale", "shift", "offset"]
    np.testing.assert_allclose(status.decoding_parameter_values,
                               [1.0, 20.0, math.log(21) - math.log(2), math.log(2), 1.0], rtol=1e-12)
    n = node.pipeline(rgb).depth.astype(np.float64)  # the model at 3 steps now
    expected = np.exp(math.log(2) + n * math.log(10.5)) - 1  # metres; n below -0.3 maps to <= 0 m: invalid
    np.testing.assert_allclose(depth_array(depth_msg), np.where(expected > 0, expected, np.nan), rtol=1e-5)

    refused = {
        ("depth_mode", "metric"): "depth_mode must be one of relative, fixed_range",
        ("near_m", 20.0): "fixed_range needs near_m < far_m",
        ("far_m", 0.5): "fixed_range needs near_m < far_m",
        ("steps", 0): "out of range",
        ("steps", 101): "out of range",
        ("steps", "four"): "Wrong parameter type",
        ("output_encoding", "8UC1"): "output_encoding must be one of 32FC1, 16UC1",
        ("checkpoint", "/elsewhere/ppd.pth"): "read-only",
        ("device", "cuda"): "read-only",
    }
    for (name, value), reason in refused.items():
        result = set_parameter(name, value)
        assert not result.successful and reason in result.reason, (name, value, result.reason)
    values = result_of(client.get_parameters(["depth_mode", "near_m", "far_m", "steps", "output_encoding",
                                              "checkpoint"])).values
    assert [v.string_value or v.double_value or v.integer_value for v in values] == [
        "fixed_range", 1.0, 20.0, 3, "32FC1", str(tiny_checkpoints["ppd"])]

    assert set_parameter("use_sim_time", False).successful  # rclpy's own parameter
    (status,) = outputs(probe, send_frame(probe, rgb), "depth/status")
    assert (status.depth_mode, status.steps, list(status.decoding_parameter_values)[:2]) == ("fixed_range", 3, [1, 20])


def test_pairing_latest_set_at_run_time_keeps_the_camera_info_and_the_counters(ros, tiny_checkpoints):
    """A camera whose single CameraInfo was already received, and an image waiting when the mode changes."""
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/camera_info", "depth/status")
    rgb = seeded_rgb()
    outputs(probe, send_frame(probe, rgb), "depth/status")  # pairing stamp: image and CameraInfo
    waiting = send_msgs(probe, rgb_image(rgb, Time()), None)
    wait_for(lambda: node._pairer.pending == (stamp_ns(waiting), FRAME_ID), what="the image waiting for CameraInfo")
    assert node.set_parameters([Parameter("pairing", value="latest")])[0].successful

    alone = send_msgs(probe, rgb_image(rgb, Time()), None)  # takes the CameraInfo received with the 1st frame
    depth, info, status = outputs(probe, alone, "depth/image", "depth/camera_info", "depth/status")
    assert (info.width, info.height, info.k[0]) == (WIDTH, HEIGHT, 100.0)
    assert (status.frames_received, status.frames_processed, status.frames_dropped) == (3, 2, 1)  # `waiting` dropped


# ------------------------------------------------------------------------------------------- laziness


def test_lazy_node_infers_only_while_an_output_has_a_subscriber(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "/diagnostics")  # lazy by default; /diagnostics is no output
    rgb = seeded_rgb()
    for _ in range(3):
        send_frame(probe, rgb)
    wait_for_diagnostic(probe, lambda s, v: v["frames_received"] == "3", what="3 frames received")
    _, values = diagnostic(probe.last("/diagnostics"))
    assert (values["frames_processed"], values["frames_dropped"], node._worker.submitted) == ("0", "0", 0)
    assert values["frames_idle"] == "3"

    probe.listen("depth/image")
    connect(probe, node, "depth/image")
    stamp = send_frame(probe, rgb)
    (depth,) = outputs(probe, stamp, "depth/image")
    np.testing.assert_allclose(depth_array(depth), relative_depth(node, rgb), rtol=1e-6)
    wait_for_diagnostic(probe, lambda s, v: (v["frames_received"], v["frames_processed"]) == ("4", "1"),
                        what="the 4th frame processed")


def test_eager_node_infers_without_subscribers(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/status", lazy=False)  # depth/status is no output to lazy
    (status,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/status")
    assert (status.frames_received, status.frames_processed) == (1, 1)
    assert node._pub_depth.get_subscription_count() == 0


# ----------------------------------------------------------------------------- latest frame wins


def test_a_30hz_burst_on_slow_inference_keeps_the_latest_frame_in_bounded_memory(ros, tiny_checkpoints):
    """500 frames at 30 Hz into a model about 10x slower (a large target_area): every frame received is
    processed or dropped and counted, the newest one wins, the node holds at most a few frames, and memory
    stays flat. (Best-effort input: on a busy machine DDS may lose some frames before the node.)"""
    frames, period_s = 500, 1 / 30
    node, probe = start(ros, tiny_checkpoints, "depth/camera_info", "depth/status", "/diagnostics",
                        target_area=512 * 384, steps=4)
    rgb = seeded_rgb(240, 320)
    image, info = rgb_image(rgb, Time()), camera_info(320, 240, Time())
    for _ in range(3):  # warm-up
        (status,) = outputs(probe, send_msgs(probe, image, info), "depth/status")
    inference_ms = status.sampling_ms + status.semantics_ms
    assert inference_ms > 3e3 * period_s, f"inference ({inference_ms:.0f} ms) too fast here to drop frames"
    rss_start = rss_bytes()
    camera = Camera(probe, image, info, frames, period_s)
    held = []  # frames inside the node: received, not yet processed, rejected or dropped (an upper bound)
    while camera.thread.is_alive():
        received = node._counts["received"]
        held.append(received - node._counts["processed"] - node._counts["rejected"] - node._dropped())
        time.sleep(0.005)
    final = send_until_processed(probe, rgb, timeout=120.0, period_s=30.0)  # after the burst: the newest wins
    status = probe.for_stamp("depth/status", final)
    rss_growth = rss_bytes() - rss_start

    received, processed, dropped = status.frames_received, status.frames_processed, status.frames_dropped
    assert 3 + frames // 2 < received <= 3 + frames + 4, "most of the burst reaches the node, once each"
    # Every image is paired or, its CameraInfo lost by best-effort DDS, superseded while waiting and counted.
    assert node._pairer.pending is None
    assert node._pairer.paired + node._pairer.dropped_unpaired == received
    assert status.frames_rejected == 0 and received == processed + dropped
    assert 3 + 2 <= processed < 3 + frames / 3 and dropped > 0  # burst frames ran, most were superseded
    assert len(held) > 100 and max(held) <= 3  # pairer + slot + the frame in inference
    stamps = [stamp_ns(s.header.stamp) for s in probe.messages("depth/status")]
    assert stamps == sorted(stamps) and len(set(stamps)) == processed  # never an older frame after a newer
    assert rss_growth < 50 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MB"
    _, values = wait_for_diagnostic(probe, lambda s, v: v["frames_processed"] == str(processed),
                                    what="a diagnostic after the burst")
    assert (values["frames_received"], values["frames_dropped"]) == (str(received), str(dropped))


# ------------------------------------------------------------------------------------------ bad input


def _bad_encoding(encoding: str, bytes_per_pixel: int):
    def make():
        image = image_msg(np.zeros((HEIGHT, WIDTH * bytes_per_pixel), dtype=np.uint8), encoding)
        image.step = WIDTH * bytes_per_pixel
        image.width = WIDTH
        return image, camera_info(WIDTH, HEIGHT, Time())
    return make


def _short_data():
    image = image_msg(seeded_rgb(), "rgb8")
    image.data = image.data[:-image.step]  # one row missing
    return image, camera_info(WIDTH, HEIGHT, Time())


def _empty_image():
    return image_msg(np.zeros((0, 0, 3), dtype=np.uint8), "rgb8"), camera_info(WIDTH, HEIGHT, Time())


def _zero_focal_length():
    info = camera_info(WIDTH, HEIGHT, Time(), fx=0.0)
    return image_msg(seeded_rgb(), "rgb8"), info


def _other_aspect():
    return image_msg(seeded_rgb(), "rgb8"), camera_info(WIDTH, WIDTH, Time())


# Builds the bad (Image, CameraInfo) pair -> the reason the node must log for it.
BAD_INPUTS = {
    "yuv422 encoding": (_bad_encoding("yuv422", 2), "unsupported image encoding 'yuv422'"),
    "64FC1 encoding": (_bad_encoding("64FC1", 8), "unsupported image encoding '64FC1'"),
    "data shorter than step * height": (
        _short_data, f"rgb8 image data has {(HEIGHT - 1) * WIDTH * 3} bytes, expected step * height"),
    "zero-size image": (_empty_image, "empty rgb8 image: 0x0"),
    "CameraInfo with zero focal length": (_zero_focal_length, "CameraInfo P has invalid fx = 0.0"),
    "CameraInfo of another aspect ratio": (
        _other_aspect, "aspect ratios differ: CameraInfo describes a 64x64 image (after ROI and binning), "
                       "the image is 64x48"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_rejected_with_its_reason_and_the_node_goes_on(ros, tiny_checkpoints, case):
    make, reason = BAD_INPUTS[case]
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "/diagnostics", "/rosout")
    bad = send_msgs(probe, *make())
    wait_for(lambda: any(reason in line for line in probe.logs()), what=f"the warning {reason!r}")
    warning = next(line for line in probe.logs() if reason in line)
    assert warning.startswith(f"dropped frame {stamp_ns(bad)} on '{FRAME_ID}': ")
    level, values = wait_for_diagnostic(probe, lambda s, v: s.level == DiagnosticStatus.WARN,
                                        what="a WARN diagnostic")
    assert (level.message, values["frames_rejected"]) == ("1 input frames rejected", "1")

    rgb = seeded_rgb()
    depth, status = outputs(probe, send_frame(probe, rgb), "depth/image", "depth/status")
    np.testing.assert_allclose(depth_array(depth), relative_depth(node, rgb), rtol=1e-6)
    assert (status.frames_received, status.frames_processed, status.frames_rejected, status.frames_dropped) == (
        2, 1, 1, 0)
    assert probe.for_stamp("depth/image", bad) is None


def test_nan_and_inf_in_a_32fc1_image_are_read_as_0_with_a_warning(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "/rosout")
    intensity = np.random.default_rng(1).random((HEIGHT, WIDTH), dtype=np.float32)  # grey, 0..1
    intensity[0, :5], intensity[1, :3], intensity[2, :2] = np.nan, np.inf, -np.inf
    (dirty,) = outputs(probe, send_msgs(probe, image_msg(intensity, "32FC1"), camera_info(WIDTH, HEIGHT, Time())),
                       "depth/image")
    wait_for(lambda: "10 NaN/inf pixels in a 32FC1 image were read as 0" in probe.logs(), what="the warning")
    clean = np.nan_to_num(intensity, nan=0.0, posinf=0.0, neginf=0.0)
    clean_depth, status = outputs(probe, send_msgs(probe, image_msg(clean, "32FC1"),
                                                   camera_info(WIDTH, HEIGHT, Time())), "depth/image", "depth/status")
    np.testing.assert_array_equal(depth_array(dirty), depth_array(clean_depth))
    assert np.isfinite(depth_array(dirty)).all()
    assert (status.frames_processed, status.frames_rejected) == (2, 0)


def test_missing_camera_info_warns_and_the_next_paired_frame_is_processed(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "/diagnostics", "/rosout")
    rgb = seeded_rgb()
    lonely = send_msgs(probe, rgb_image(rgb, Time()), None)
    level, _ = wait_for_diagnostic(probe, lambda s, v: s.level == DiagnosticStatus.WARN,
                                   what="a WARN diagnostic")
    assert level.message == "waiting for CameraInfo"
    wait_for(lambda: any(line.startswith(f"no CameraInfo for the image stamped {stamp_ns(lonely)} on '{FRAME_ID}'")
                         for line in probe.logs()), what="the missing-CameraInfo warning")
    assert node._pairer.pending == (stamp_ns(lonely), FRAME_ID)

    depth, status = outputs(probe, send_frame(probe, rgb), "depth/image", "depth/status")
    assert (status.frames_received, status.frames_processed, status.frames_dropped, status.frames_rejected) == (
        2, 1, 1, 0)  # the lonely image was superseded: dropped
    assert node._pairer.pending is None and probe.for_stamp("depth/image", lonely) is None


# ------------------------------------------------------------------------------ other inputs and models


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_compressed_input_is_decoded_as_rgb(ros, tiny_checkpoints, codec):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", probe_kwargs={"compressed": True},
                        use_compressed=True)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([rows * 5, cols * 4, 255 - rows * 2 - cols], axis=-1).astype(np.uint8)  # smooth: JPEG-friendly
    ok, encoded = cv2.imencode("." + codec, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # image_transport's order
    assert ok
    msg = CompressedImage(format=f"rgb8; {codec} compressed bgr8", data=encoded.tobytes())
    msg.header.frame_id = FRAME_ID
    stamp = send_msgs(probe, msg, camera_info(WIDTH, HEIGHT, Time()))

    depth, status = outputs(probe, stamp, "depth/image", "depth/status")
    decoded = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if codec == "png":
        np.testing.assert_array_equal(decoded, rgb)
    else:
        assert 0 < np.abs(decoded.astype(int) - rgb).mean() < 3
    assert (depth.width, depth.height, status.frames_processed) == (WIDTH, HEIGHT, 1)
    np.testing.assert_allclose(depth_array(depth), relative_depth(node, decoded), rtol=1e-6)


def test_moge2_variant_starts_and_publishes(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status",
                        checkpoint=str(tiny_checkpoints["ppd_moge"]), semantics=str(tiny_checkpoints["moge2"]),
                        semantics_type="moge2")
    rgb = seeded_rgb()
    depth, status = outputs(probe, send_frame(probe, rgb), "depth/image", "depth/status")
    assert status.model_id == "ppd_moge.pth + moge2.pt (moge2)"
    assert (depth.encoding, depth.width, depth.height) == ("32FC1", WIDTH, HEIGHT)
    np.testing.assert_allclose(depth_array(depth), relative_depth(node, rgb), rtol=1e-6)


# ------------------------------------------------------------------------------------ the process


@pytest.fixture()
def node_env(tmp_path, ros) -> dict[str, str]:
    """Environment for a depth_node process: the ``ros`` harness's domain id (its probe can talk to the
    process), and the test-only DINOv2 sizes of the tiny checkpoints registered at interpreter start
    (a sitecustomize), as test/conftest.py does in this process."""
    (tmp_path / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TEST_DIR)!r})\nimport checkpoint_files  # registers the test ViTs\n")
    python_path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "ROS_DOMAIN_ID": str(ros.domain_id), "PYTHONPATH": python_path}


@contextmanager
def depth_node_process(args: list[str], env: dict[str, str]):
    """The installed ``depth_node`` script running with ``args``; yields it and a function giving its
    stderr so far. Killed on exit if still running."""
    assert DEPTH_NODE.is_file(), f"{DEPTH_NODE} is not installed: pip install -e . (make venv)"
    process = subprocess.Popen([str(DEPTH_NODE), *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        yield process, lambda: "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        reader.join(timeout=10)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_shuts_the_node_down_cleanly_with_a_frame_in_flight(ros, tiny_checkpoints, node_env, signum):
    """Ctrl-C (or launch's SIGTERM) while frames stream in and the (slow: large target_area) model is busy:
    exit code 0, and no error for the frame whose outputs can no longer be published."""
    probe = ros.probe("depth/camera_info", "depth/status")  # an output subscriber: the lazy node infers
    args = ["--ros-args", "-p", f"checkpoint:={tiny_checkpoints['ppd']}", "-p",
            f"semantics:={tiny_checkpoints['da2']}", "-p", f"target_area:={512 * 384}"]
    with depth_node_process(args, node_env) as (process, stderr):
        wait_for(lambda: re.search(r"model .* on cpu", stderr()) or process.poll() is not None, timeout=60,
                 what="the node's start-up line")
        assert process.poll() is None, stderr()
        wait_for(lambda: probe.image_pub.get_subscription_count() and probe.info_pub.get_subscription_count(),
                 what="the node's input subscriptions")
        camera = Camera(probe, rgb_image(seeded_rgb(240, 320), Time()), camera_info(320, 240, Time()), frames=900)
        try:
            wait_for(lambda: probe.count("depth/status") > 0, what="a first processed frame")  # busy with the next
            process.send_signal(signum)
            assert process.wait(timeout=30) == 0, stderr()
        finally:
            camera.stop()
    for sign in ("ERROR", "Traceback", "Failed to publish"):
        assert sign not in stderr(), stderr()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_model_loads_ends_start_up_without_a_traceback(tiny_checkpoints, node_env, tmp_path, signum):
    """Loading is made slow (the official checkpoints load in seconds, the tiny ones in milliseconds): the
    process's sitecustomize wraps ``load_model`` to say so on stderr and wait."""
    with (tmp_path / "sitecustomize.py").open("a") as site:
        site.write("import threading\nimport pixel_perfect_ros.inference.loader as loader\n_load = loader.load_model\n"
                   "def load_model(request, **kwargs):\n    print('LOADING', file=sys.stderr, flush=True)\n"
                   "    threading.Event().wait(60)\n    return _load(request, **kwargs)\nloader.load_model = load_model\n")
    args = ["--ros-args", "-p", f"checkpoint:={tiny_checkpoints['ppd']}", "-p", f"semantics:={tiny_checkpoints['da2']}"]
    with depth_node_process(args, node_env) as (process, stderr):
        wait_for(lambda: "LOADING" in stderr() or process.poll() is not None, timeout=60, what="the model loading")
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0, stderr()
    assert "Traceback" not in stderr() and f"stopped by {signum.name} while starting" in stderr(), stderr()


def test_without_checkpoint_parameters_the_node_runs_the_bundled_model(ros, node_env):
    probe = ros.probe("depth/image", "depth/status")
    with depth_node_process([], node_env) as (process, stderr):
        wait_for(lambda: re.search(r"model .* on cpu", stderr()) or process.poll() is not None, timeout=60,
                 what="the node's start-up line")
        assert process.poll() is None, stderr()
        assert "using the bundled tiny model" in stderr()
        wait_for(lambda: probe.image_pub.get_subscription_count() and probe.info_pub.get_subscription_count(),
                 what="the node's input subscriptions")
        stamp = send_until_processed(probe, seeded_rgb(96, 128))
        status = probe.for_stamp("depth/status", stamp)
        assert status.model_id.startswith("bundled ppd.pth + moge2.pt (moge2)"), status.model_id
        depth = depth_array(probe.for_stamp("depth/image", stamp))
        assert depth.shape == (96, 128) and np.isfinite(depth).all()
        assert np.nanstd(depth) > 0  # a depth map, not a constant


def test_a_checkpoint_without_semantics_exits_non_zero_naming_the_files_to_download(node_env, tmp_path):
    with depth_node_process(["--ros-args", "-p", f"checkpoint:={tmp_path / 'ppd.pth'}"], node_env) as (process, stderr):
        returncode = process.wait(timeout=60)
    assert returncode != 0
    for name in ("both 'checkpoint' and 'semantics'", "ppd.pth", "depth_anything_v2_vitl.pth", "ppd_moge.pth",
                 "moge2.pt"):
        assert name in stderr(), stderr()


# ------------------------------------------------------------------------------ metric modes and filter


def test_moge2_mode_shares_the_encoder_and_publishes_metres_fitted_to_moge2(ros, tiny_checkpoints):
    node, probe = start(ros, {**tiny_checkpoints, "ppd": tiny_checkpoints["ppd_moge"], "da2": tiny_checkpoints["moge2"]},
                        "depth/image", "depth/status", semantics_type="moge2", depth_mode="moge2", moge2_min_points=10)
    assert node.pipeline.shared_encoder  # one encoder pass: MoGe-2 runs on the semantics' token grid
    rgb = seeded_rgb()
    depth, status = outputs(probe, send_frame(probe, rgb), "depth/image", "depth/status")
    assert status.is_metric and status.depth_mode == "moge2" and status.scale_state == "fitted"
    params = dict(zip(status.decoding_parameter_names, status.decoding_parameter_values))
    assert params["offset"] == 1.0 and params["reference_points"] >= 10

    prediction = node.pipeline(rgb, metric_reference=True)  # the same frame again: fixed seed, same result
    decoder = make_decoder("moge2", moge2_min_points=10)
    decoder.update(prediction.processing_depth, prediction.metric_reference.depth)
    np.testing.assert_allclose(depth_array(depth), decoder(prediction.depth), rtol=1e-5)
    assert np.nanmax(depth_array(depth)) <= np.max(prediction.metric_reference.depth[prediction.metric_reference.mask])


def test_moge2_with_da2_semantics_runs_its_own_encoder(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", depth_mode="moge2",
                        moge2_min_points=10, moge2_checkpoint=str(tiny_checkpoints["moge2"]))
    assert not node.pipeline.shared_encoder
    (status,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/status")
    assert status.is_metric and status.scale_state == "fitted"


def test_moge2_mode_needs_a_moge2_model(ros, tiny_checkpoints):
    node = ros.depth_node(tiny_checkpoints)
    (result,) = node.set_parameters([Parameter("depth_mode", value="moge2")])
    assert not result.successful and "needs the MoGe-2 model" in result.reason
    with pytest.raises(ValueError, match="needs the MoGe-2 model"):
        ros.depth_node(tiny_checkpoints, depth_mode="moge2")


def test_sparse_topic_aligns_to_the_sensor_of_the_frames_stamp_holds_without_it_and_falls_back_before_it(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", depth_mode="sparse_topic",
                        sparse_min_points=20, sparse_max_age_s=0.0)
    sparse_pub = probe.create_publisher(Image, "sparse_depth", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    wait_for(lambda: sparse_pub.get_subscription_count() > 0, what="sparse_depth subscription")
    n = np.tile(np.linspace(0.0, 1.0, WIDTH, dtype=np.float32), (HEIGHT, 1))
    node.pipeline = FixedPipeline(lambda h, w: cv2.resize(n, (w, h), interpolation=cv2.INTER_LINEAR), node.pipeline)
    metric = np.expm1(0.9 * n + 0.3).astype(np.float32)
    rgb = seeded_rgb()

    (status,) = outputs(probe, send_frame(probe, rgb), "depth/status")  # no sensor depth yet
    assert (status.is_metric, status.scale_state) == (False, "relative_fallback")

    # A 16UC1 sensor at half the resolution (its pixel (r, c) measures full-resolution pixel (2r+1, 2c+1),
    # the nearest to its centre), a sparse grid of points, stamped like the frame; then a later
    # measurement (twice as far) arrives before the frame: the one of the frame's stamp must be used.
    sensor = np.zeros((HEIGHT // 2, WIDTH // 2), np.uint16)
    sensor[::3, ::3] = np.round(metric[1::2, 1::2] * 1000)[::3, ::3]
    stamp = probe.now()
    for scale, sensor_stamp in ((1, stamp), (2, Time(sec=stamp.sec + 1, nanosec=stamp.nanosec))):
        sparse = image_msg(sensor * scale, "16UC1")
        sparse.header.stamp = sensor_stamp
        sparse_pub.publish(sparse)
    wait_for(lambda: len(node._sparse_depths) == 2, what="the sensor depths")
    image, info = rgb_image(rgb, stamp), camera_info(WIDTH, HEIGHT, stamp)
    probe.send(image, info)
    depth, status = outputs(probe, stamp, "depth/image", "depth/status")
    assert (status.is_metric, status.scale_state) == (True, "fitted")
    np.testing.assert_allclose(depth_array(depth), metric, rtol=0.02)

    (status,) = outputs(probe, send_frame(probe, rgb), "depth/status")  # the sensor depth is of another stamp
    assert (status.is_metric, status.scale_state) == (True, "held")


def test_flying_pixel_filter_removes_mixed_pixels_of_a_step_edge(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", depth_mode="fixed_range",
                        near_m=1.0, far_m=5.0, flying_pixel_threshold=0.1)
    step = np.where(np.arange(WIDTH) < WIDTH // 2, 2.0, 4.0).astype(np.float32)
    step[WIDTH // 2 - 1] = 3.0  # one column of mixed pixels between the two planes
    metres = np.tile(step, (HEIGHT, 1))
    n = fixed_range_normalised(metres, 1.0, 5.0)
    node.pipeline = FixedPipeline(lambda h, w: cv2.resize(n, (w, h), interpolation=cv2.INTER_NEAREST), node.pipeline)
    depth, status = outputs(probe, send_frame(probe, seeded_rgb()), "depth/image", "depth/status")
    published = depth_array(depth)
    assert status.flying_pixel_filter and status.flying_pixels_removed == HEIGHT
    assert np.isnan(published[:, WIDTH // 2 - 1]).all()
    assert np.isfinite(np.delete(published, WIDTH // 2 - 1, axis=1)).all()


def test_intrinsics_from_moge2_need_no_camera_info(ros, tiny_checkpoints):
    node, probe = start(ros, {**tiny_checkpoints, "ppd": tiny_checkpoints["ppd_moge"], "da2": tiny_checkpoints["moge2"]},
                        "depth/image", "depth/camera_info", "depth/points", "depth/status", semantics_type="moge2",
                        intrinsics_source="moge2")
    rgb = seeded_rgb()
    stamp = send_msgs(probe, rgb_image(rgb, Time()), None)  # no CameraInfo at all
    depth, info, points, status = outputs(probe, stamp, "depth/image", "depth/camera_info", "depth/points",
                                          "depth/status")
    assert status.intrinsics_source == "moge2" and status.depth_mode == "relative"
    K = pixel_intrinsics(node.pipeline(rgb, metric_reference=True).metric_reference.intrinsics, WIDTH, HEIGHT)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), K, rtol=1e-6)
    np.testing.assert_allclose(np.reshape(info.p, (3, 4))[:, :3], K, rtol=1e-6)
    assert (info.width, info.height, info.distortion_model) == (WIDTH, HEIGHT, "plumb_bob")
    xyz = cloud_points(points)
    z = depth_array(depth)
    u = np.arange(WIDTH)[None, :]
    np.testing.assert_allclose(xyz["x"], (u - K[0, 2]) * z / K[0, 0], rtol=1e-5, atol=1e-6)


def test_intrinsics_from_moge2_need_a_moge2_model(ros, tiny_checkpoints):
    node = ros.depth_node(tiny_checkpoints)
    (result,) = node.set_parameters([Parameter("intrinsics_source", value="moge2")])
    assert not result.successful and "intrinsics_source moge2 needs the MoGe-2 model" in result.reason


def test_publish_points_false_publishes_depth_but_no_cloud(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/points", "depth/status", publish_points=False)
    stamp = send_frame(probe, seeded_rgb())
    outputs(probe, stamp, "depth/image", "depth/status")
    assert probe.for_stamp("depth/points", stamp) is None and probe.count("depth/points") == 0


def test_seed_minus_one_draws_fresh_noise_per_frame(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", seed=-1)
    rgb = seeded_rgb()
    first, second = (depth_array(outputs(probe, send_frame(probe, rgb), "depth/image")[0]) for _ in range(2))
    assert first.shape == second.shape and not np.array_equal(first, second)
