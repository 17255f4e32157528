"""depth_node over real rclpy and DDS: what parameter changes keep, what each frame's status reports, the
frames lost before the node, output health and stopping with a frame in flight.

Some tests replace the node's model to control when and what it computes (each says why); the model
itself is covered by the parity tests.
"""
from __future__ import annotations

import threading

import numpy as np
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import camera_info, rgb_image, wait_for
from sensor_msgs.msg import Image
from std_msgs.msg import Empty
from test_depth_node import (
    HEIGHT,
    WIDTH,
    FixedPipeline,
    image_msg,
    outputs,
    seeded_rgb,
    send_frame,
    send_msgs,
    start,
    wait_for_diagnostic,
)


class GatedPipeline(FixedPipeline):
    """A ``FixedPipeline`` that holds each call until ``release`` is set, recording the steps and target
    area it was entered with (``ran``)."""

    def __init__(self, like):
        super().__init__(lambda h, w: np.zeros((h, w), np.float32), like)
        self.entered, self.release, self.ran = threading.Event(), threading.Event(), []

    def __call__(self, rgb, metric_reference=False):
        self.ran.append((self.steps, self.target_area))
        self.entered.set()
        assert self.release.wait(30), "the test never released the model"
        return super().__call__(rgb, metric_reference)


def test_status_reports_the_steps_and_size_each_frame_ran_with_when_they_change_during_a_frame(ros, tiny_checkpoints):
    """The model is gated (GatedPipeline) so the change lands while a frame is in it, every time."""
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status")
    model = node.pipeline = GatedPipeline(node.pipeline)
    first = send_frame(probe, seeded_rgb())
    assert model.entered.wait(20)
    assert all(r.successful for r in node.set_parameters([Parameter("steps", value=3),
                                                          Parameter("target_area", value=32 * 24)]))
    model.release.set()
    (before,) = outputs(probe, first, "depth/status")
    (after,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/status")
    assert model.ran == [(2, 64 * 48), (3, 32 * 24)]
    assert (before.steps, before.processing_width, before.processing_height) == (2, 64, 48)
    assert (after.steps, after.processing_width, after.processing_height) == (3, 32, 32)  # sides rounded to 16


def test_an_unrelated_parameter_change_keeps_the_sparse_fit(ros, tiny_checkpoints):
    """A known model output (FixedPipeline) so that the sensor depth fits it."""
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", depth_mode="sparse_topic", sparse_min_points=20,
                        sparse_max_age_s=0.0)
    sparse_pub = probe.create_publisher(Image, "sparse_depth", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    wait_for(lambda: sparse_pub.get_subscription_count() > 0, what="sparse_depth subscription")
    n = np.tile(np.linspace(0.0, 1.0, WIDTH, dtype=np.float32), (HEIGHT, 1))
    node.pipeline = FixedPipeline(lambda h, w: n, node.pipeline)
    stamp = probe.now()
    sensor = image_msg(np.expm1(0.9 * n + 0.3).astype(np.float32), "32FC1")
    sensor.header.stamp = stamp
    sparse_pub.publish(sensor)
    wait_for(lambda: len(node._sparse_depths) == 1, what="the sensor depth")
    probe.send(rgb_image(seeded_rgb(), stamp), camera_info(WIDTH, HEIGHT, stamp))
    (fitted,) = outputs(probe, stamp, "depth/status")
    assert (fitted.is_metric, fitted.scale_state) == (True, "fitted")

    for name, value in (("points_decimation", 2), ("steps", 3), ("flying_pixel_threshold", 0.1)):
        assert node.set_parameters([Parameter(name, value=value)])[0].successful
        (status,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/status")  # no sensor depth: held
        assert (status.is_metric, status.scale_state) == (True, "held"), name
        assert list(status.decoding_parameter_values)[:-1] == list(fitted.decoding_parameter_values)[:-1]  # not points

    assert node.set_parameters([Parameter("sparse_smoothing", value=0.5)])[0].successful  # its own: a new fit
    (status,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/status")
    assert (status.is_metric, status.scale_state) == (False, "relative_fallback")


def test_switching_intrinsics_to_moge2_drops_the_image_waiting_for_camera_info(ros, tiny_checkpoints):
    node, probe = start(ros, {**tiny_checkpoints, "ppd": tiny_checkpoints["ppd_moge"], "da2": tiny_checkpoints["moge2"]},
                        "depth/image", "depth/status", "/diagnostics", semantics_type="moge2")
    send_msgs(probe, rgb_image(seeded_rgb(), Time()), None)  # no CameraInfo: it waits
    wait_for(lambda: node._pairer.pending is not None, what="the image waiting for its CameraInfo")
    assert node.set_parameters([Parameter("intrinsics_source", value="moge2")])[0].successful
    assert node._pairer.pending is None
    (status,) = outputs(probe, send_msgs(probe, rgb_image(seeded_rgb(), Time()), None), "depth/status")
    assert (status.intrinsics_source, status.frames_dropped) == ("moge2", 1)
    received = probe.count("/diagnostics")
    wait_for(lambda: probe.count("/diagnostics") >= received + 2, what="two more diagnostics")  # > 1 s later
    messages = [status.message for d in probe.messages("/diagnostics")[received:] for status in d.status]
    assert "waiting for CameraInfo" not in messages


def test_a_model_without_valid_depth_is_an_error_and_each_status_gives_the_valid_share(ros, tiny_checkpoints):
    """The model is replaced (FixedPipeline): a real model does not produce NaN on demand."""
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "/diagnostics")
    n = np.zeros((HEIGHT, WIDTH), np.float32)
    n[:, : WIDTH // 4] = np.nan
    node.pipeline = FixedPipeline(lambda h, w: n if (h, w) == (HEIGHT, WIDTH) else np.zeros((h, w), np.float32),
                                  node.pipeline)
    (status,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/status")
    assert status.valid_fraction == 0.75
    n[:] = np.nan
    (status,) = outputs(probe, send_frame(probe, seeded_rgb()), "depth/status")
    assert status.valid_fraction == 0.0
    level, _ = wait_for_diagnostic(probe, lambda s, v: s.level == DiagnosticStatus.ERROR, what="an ERROR diagnostic")
    assert level.message == "1 frames with (almost) no valid depth"


def test_frames_lost_before_the_node_are_counted_from_the_publishers_sequence_numbers(ros, tiny_checkpoints):
    """The executor is held (a probe callback waits) while 20 frames are published into the node's
    reliable KEEP_LAST 1 input queue: all but the newest are overwritten there, never received."""
    node, probe = start(ros, tiny_checkpoints, input_reliability="reliable", input_depth=1, lazy=False)
    hold, held = threading.Event(), threading.Event()
    probe.create_subscription(Empty, "hold", lambda _: (held.set(), hold.wait(30)), 10)
    hold_pub = probe.create_publisher(Empty, "hold", 10)
    wait_for(lambda: hold_pub.get_subscription_count() > 0, what="the hold subscription")
    image = rgb_image(seeded_rgb(), Time())
    probe.image_pub.publish(image)  # the baseline of the publisher's sequence numbers
    wait_for(lambda: node._counts["received"] == 1, what="the first frame")
    hold_pub.publish(Empty())
    assert held.wait(20)
    for _ in range(20):
        probe.image_pub.publish(image)
    hold.set()
    wait_for(lambda: node._counts["received"] == 2, what="the newest frame of the burst")
    assert node._gaps.lost == 19  # received + lost == published


class Ticker(torch.nn.Module):
    """A module that takes ``seconds`` per call: a slow model, interruptible between calls."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls, self.started = seconds, 0, threading.Event()

    def forward(self) -> None:
        self.calls += 1
        self.started.set()
        threading.Event().wait(self.seconds)


class SlowPipeline(FixedPipeline):
    """A ``FixedPipeline`` whose frames take ``calls`` x 0.05 s of module calls (full-size PPD on a CPU
    takes ~11 s a frame; a real model that slow would make the test slow to set up)."""

    def __init__(self, like, calls: int = 600):
        super().__init__(lambda h, w: np.zeros((h, w), np.float32), like)
        self.ticker, self.total = Ticker(0.05), calls

    def __call__(self, rgb, metric_reference=False):
        for _ in range(self.total):
            self.ticker()
        return super().__call__(rgb, metric_reference)


def test_stopping_interrupts_the_frame_in_flight_and_publishes_nothing_for_it(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status")
    model = node.pipeline = SlowPipeline(node.pipeline)  # 30 s a frame
    send_frame(probe, seeded_rgb())
    assert model.ticker.started.wait(20)
    ros.executor.remove_node(node)
    ros.nodes.remove(node)
    node.destroy_node()
    assert not node._worker._thread.is_alive()  # ended, not left running past the node
    assert model.ticker.calls < model.total and node._worker.failed == 1
    assert probe.count("depth/status") == 0


def test_torch_threads_sets_torch_s_thread_pool(ros, tiny_checkpoints):
    torch.set_num_threads(2)  # restored after the test (conftest)
    start(ros, tiny_checkpoints, "depth/image")  # torch_threads: 1 by default
    assert torch.get_num_threads() == 1
    start(ros, tiny_checkpoints, "depth/image", torch_threads=0)  # 0: left as it is
    assert torch.get_num_threads() == 1
