"""depth_node in video mode over real rclpy and DDS, on tiny random PPVD + Pi3 files in the official formats
(``checkpoint_files.write_video_checkpoints``).

Frames are sent one at a time, each after the worker took the previous one (the node's input slot keeps
only the latest frame), so that every frame is pushed into the stream and the outputs can be checked
against the same frames streamed offline through ``StreamingVideoDepth`` (both streaming modes). Also:
the reset service and topic, a stamp going back, and what video mode refuses.
"""
from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from checkpoint_files import write_video_checkpoints
from rclpy.parameter import Parameter
from ros_harness import camera_info, connect, result_of, rgb_image, wait_for
from std_msgs.msg import Empty
from std_srvs.srv import Trigger

from pixel_perfect_ros.inference.checkpoints import CheckpointError
from pixel_perfect_ros.inference.video_pipeline import PixelPerfectVideoDepth
from pixel_perfect_ros.inference.video_stream import MODES, StreamingVideoDepth
from pixel_perfect_ros.ros.depth_node import DepthNode

HEIGHT, WIDTH = 24, 40
STEPS = 1


@pytest.fixture(scope="module")
def video_checkpoints(tmp_path_factory):
    """(ppvd.pth, pi3.safetensors) of the tiny random video models."""
    return write_video_checkpoints(tmp_path_factory.mktemp("ppvd"))


def video_node(ros, checkpoints, **parameters) -> DepthNode:
    ppvd, pi3 = checkpoints
    params = {"mode": "video", "checkpoint": str(ppvd), "semantics": str(pi3), "steps": STEPS, **parameters}
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return ros.add(DepthNode(context=ros.context, parameter_overrides=overrides))


def start(ros, checkpoints, **parameters):
    node = video_node(ros, checkpoints, **parameters)
    probe = ros.probe("depth/image", "depth/status", "/rosout")
    connect(probe, node, "depth/image", "depth/status")
    return node, probe


def frames(count: int, seed: int = 0) -> np.ndarray:
    """(count, HEIGHT, WIDTH, 3) uint8 RGB noise."""
    return np.random.default_rng(seed).integers(0, 256, (count, HEIGHT, WIDTH, 3), dtype=np.uint8)


def send(node, probe, rgb: np.ndarray, sec: int) -> Time:
    """Publish one frame with its CameraInfo stamped ``sec`` s, and wait until the worker has run it."""
    stamp = Time(sec=sec)
    before = node._worker.processed
    probe.send(rgb_image(rgb, stamp), camera_info(WIDTH, HEIGHT, stamp))
    wait_for(lambda: node._worker.processed > before, what=f"the worker to take the frame stamped {sec} s")
    return stamp


def statuses(probe, count: int) -> list:
    wait_for(lambda: probe.count("depth/status") >= count, what=f"{count} statuses")
    return probe.messages("depth/status")


def offline_depth(checkpoints, clip: np.ndarray, frames_per_window: int, mode: str) -> list[np.ndarray]:
    """The normalised depth of every frame of ``clip`` streamed outside ROS with the node's settings."""
    model = PixelPerfectVideoDepth.from_checkpoints(*checkpoints, steps=STEPS, seed=0)
    stream = StreamingVideoDepth(model, frames_per_window=frames_per_window, mode=mode)
    out = [result for i, rgb in enumerate(clip) for result in stream.push(rgb, i)]
    assert [stamp for stamp, _ in out] == list(range(len(clip)))
    return [depth for _, depth in out]


@pytest.mark.parametrize("streaming", MODES)
def test_groups_of_k_frames_come_out_in_order_with_their_own_stamps_and_the_streams_depth(ros, video_checkpoints,
                                                                                         streaming):
    node, probe = start(ros, video_checkpoints, video_frames_per_window=4, video_streaming=streaming)
    clip = frames(11)  # 3 filling the cache, then two groups of 4
    stamps = [send(node, probe, rgb, 100 + i) for i, rgb in enumerate(clip[:6])]
    assert all(probe.for_stamp("depth/status", s) is None for s in stamps[3:])  # group incomplete: nothing yet
    stamps += [send(node, probe, rgb, 106 + i) for i, rgb in enumerate(clip[6:])]

    status = statuses(probe, 11)
    assert len(status) == 11
    assert [s.header.stamp for s in status] == stamps  # each input stamp once, in stamp order
    assert [s.header.stamp for s in probe.messages("depth/image")] == stamps
    assert [s.video_cache_state for s in status] == ["filling", "filling"] + ["ready"] * 9
    assert [s.video_references for s in status] == [1, 2] + [3] * 9
    first = status[0]
    assert (first.mode, first.video_streaming, first.model_id) == ("video", streaming,
                                                                   "ppvd.pth + pi3.safetensors (pi3)")
    assert (first.processing_width, first.processing_height, first.output_width, first.output_height) == (
        64, 64, WIDTH, HEIGHT)
    assert (first.steps, first.depth_mode, first.is_metric) == (STEPS, "relative", False)
    assert all(s.sampling_ms > 0 and s.total_ms > 0 for s in status)
    for group in (status[3:7], status[7:11]):  # one push's model time, shared by its 4 frames
        assert len({(s.preprocess_ms, s.semantics_ms, s.sampling_ms) for s in group}) == 1
    assert (status[-1].video_reanchors, status[-1].video_resets, status[-1].frames_processed) == (0, 0, 11)

    expected = offline_depth(video_checkpoints, clip, frames_per_window=4, mode=streaming)
    for msg, normalised in zip(probe.messages("depth/image"), expected):
        assert (msg.encoding, msg.height, msg.width) == ("32FC1", HEIGHT, WIDTH)
        depth = np.frombuffer(msg.data, "<f4").reshape(HEIGHT, WIDTH)
        np.testing.assert_allclose(depth, np.exp(normalised.astype(np.float64)).astype(np.float32), rtol=1e-5)


def test_reset_service_topic_and_a_stamp_going_back_restart_the_cache(ros, video_checkpoints):
    node, probe = start(ros, video_checkpoints, video_frames_per_window=2)
    clip = frames(8, seed=1)
    for i in range(3):
        send(node, probe, clip[i], 200 + i)
    waiting = send(node, probe, clip[3], 203)  # first of a group of 2: waits in the stream
    assert statuses(probe, 3)[-1].video_cache_state == "ready"

    client = probe.create_client(Trigger, "/depth_node/reset_video")
    assert client.wait_for_service(timeout_sec=20.0)
    response = result_of(client.call_async(Trigger.Request()))
    assert response.success and response.message
    after_service = send(node, probe, clip[4], 204)
    status = statuses(probe, 4)[-1]
    assert status.header.stamp == after_service
    assert (status.video_cache_state, status.video_references, status.video_resets) == ("filling", 1, 1)
    assert status.frames_dropped == 1 and probe.for_stamp("depth/status", waiting) is None  # the group's frame

    publisher = probe.create_publisher(Empty, "reset_video", 10)
    wait_for(lambda: publisher.get_subscription_count() > 0, what="the reset_video subscription")
    publisher.publish(Empty())
    wait_for(lambda: node._reset_request is not None, what="the reset request")
    send(node, probe, clip[5], 205)
    status = statuses(probe, 5)[-1]
    assert (status.video_cache_state, status.video_references, status.video_resets) == ("filling", 1, 2)

    send(node, probe, clip[6], 206)
    assert statuses(probe, 6)[-1].video_references == 2
    back = send(node, probe, clip[7], 150)  # a bag looping: the stamp goes back
    status = statuses(probe, 7)[-1]
    assert status.header.stamp == back
    assert (status.video_cache_state, status.video_references, status.video_resets) == ("filling", 1, 3)
    wait_for(lambda: any("stamp went back" in line for line in probe.logs()), what="the log line of the reset")
    assert status.frames_dropped == 1 and status.frames_processed == 7


def test_a_steps_change_during_a_group_applies_from_the_next_group(ros, video_checkpoints):
    node, probe = start(ros, video_checkpoints, video_frames_per_window=2)
    clip = frames(7, seed=2)
    for i in range(3):
        send(node, probe, clip[i], 300 + i)
    send(node, probe, clip[3], 303)  # first of a group of 2: waits in the stream
    assert node.set_parameters([Parameter("steps", value=STEPS + 1)])[0].successful
    send(node, probe, clip[4], 304)
    status = statuses(probe, 5)
    assert [s.steps for s in status] == [STEPS] * 5  # the group started before the change ends with it
    for i in range(5, 7):
        send(node, probe, clip[i], 300 + i)
    status = statuses(probe, 7)
    assert [s.steps for s in status[5:]] == [STEPS + 1] * 2 and status[-1].video_resets == 0
    assert node.pipeline.steps == STEPS + 1


def test_what_video_mode_cannot_do_is_refused_with_a_reason(ros, video_checkpoints):
    for name, value in (("depth_mode", "moge2"), ("intrinsics_source", "moge2"), ("output_resolution", "processing")):
        with pytest.raises(ValueError, match=f"{name} {value} is not available in video mode"):
            video_node(ros, video_checkpoints, **{name: value})
    with pytest.raises(CheckpointError, match="(?s)ppvd.pth.*gangweix/Pixel-Perfect-Depth.*yyfz233/Pi3"):
        video_node(ros, ("/nowhere/ppvd.pth", "/nowhere/model.safetensors"))

    node = video_node(ros, video_checkpoints)
    refused = {("depth_mode", "moge2"): "not available in video mode",
               ("output_resolution", "processing"): "not available in video mode",
               ("seed", 3): "cannot change in video mode", ("target_area", 4096): "cannot change in video mode",
               ("video_frames_per_window", 2): "read-only", ("mode", "image"): "read-only"}
    for (name, value), reason in refused.items():
        (result,) = node.set_parameters([Parameter(name, value=value)])
        assert not result.successful and reason in result.reason, (name, result.reason)
    for name, value in (("depth_mode", "fixed_range"), ("steps", 2), ("flying_pixel_threshold", 0.1)):
        assert node.set_parameters([Parameter(name, value=value)])[0].successful, name


def test_image_mode_reports_its_mode_and_has_no_video_service(ros, tiny_checkpoints):
    node = ros.depth_node(tiny_checkpoints)
    probe = ros.probe("depth/image", "depth/status")  # depth/image: the lazy node infers
    connect(probe, node, "depth/image", "depth/status")
    stamp = Time(sec=7)
    probe.send(rgb_image(frames(1)[0], stamp), camera_info(WIDTH, HEIGHT, stamp))
    (status,) = statuses(probe, 1)
    assert (status.mode, status.video_streaming, status.video_cache_state) == ("image", "", "")
    assert (status.video_references, status.video_reanchors, status.video_resets) == (0, 0, 0)
    assert "/depth_node/reset_video" not in dict(node.get_service_names_and_types())
