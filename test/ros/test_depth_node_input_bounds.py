"""depth_node's input bounds and input validation over real rclpy and DDS: a decompression bomb is refused
from its header in bounded memory, max_input_pixels changes at run time, and a frame with bad intrinsics is
rejected with nothing published for it; the node goes on with the next good frame.

The node runs in this process (``ros_harness``), so its memory is this process's: the peak resident set
(VmHWM) is reset through /proc/self/clear_refs before the bomb is sent and read after it was refused.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.parameter import Parameter
from ros_harness import FRAME_ID, camera_info, rgb_image, wait_for
from sensor_msgs.msg import CompressedImage, RegionOfInterest
from test_depth_node import HEIGHT, WIDTH, depth_array, outputs, relative_depth, seeded_rgb, send_msgs, start, stamp_ns

BOMB_SIDE = 8000
"""The bomb PNG's width and height: 192 MB of RGB once decoded, twice that converted to RGB."""
MAX_GROWTH_BYTES = 200 * 2**20
"""How far the process's peak resident set may rise while the bomb is received and refused."""


def reset_peak_rss() -> int:
    """Reset this process's peak resident set (VmHWM) to its current one; returns that, bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_rss()


def peak_rss() -> int:
    """This process's peak resident set since the last ``reset_peak_rss`` (VmHWM), bytes."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def png_message(rgb: np.ndarray, compression: int = 1) -> CompressedImage:
    """An (H, W, 3) uint8 RGB image as a PNG CompressedImage in image_transport's BGR order, not stamped;
    ``compression``: zlib level 0..9."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    assert ok
    msg = CompressedImage(format="rgb8; png compressed bgr8", data=encoded.tobytes())
    msg.header.frame_id = FRAME_ID
    return msg


def test_a_png_bomb_is_refused_in_bounded_memory_and_the_next_frame_is_processed(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "/rosout",
                        probe_kwargs={"compressed": True}, use_compressed=True)
    bomb = png_message(np.zeros((BOMB_SIDE, BOMB_SIDE, 3), np.uint8), compression=9)
    assert len(bomb.data) < 200_000  # 187 KB

    before = reset_peak_rss()
    bad = send_msgs(probe, bomb, camera_info(BOMB_SIDE, BOMB_SIDE, Time()))
    wait_for(lambda: node._counts["rejected"] + node._counts["processed"] > 0, what="the bomb's outcome")
    growth = peak_rss() - before
    assert node._counts["rejected"] == 1 and growth < MAX_GROWTH_BYTES, f"peak RSS rose by {growth / 2**20:.0f} MB"
    reason = f"of {BOMB_SIDE}x{BOMB_SIDE} = {BOMB_SIDE ** 2} pixels is above the limit of 16000000 pixels"
    wait_for(lambda: any(reason in line for line in probe.logs()), what="the refusal's warning")
    assert any(line.startswith(f"dropped frame {stamp_ns(bad)} on '{FRAME_ID}': ") for line in probe.logs())

    rgb = seeded_rgb()
    good = send_msgs(probe, png_message(rgb), camera_info(WIDTH, HEIGHT, Time()))
    depth, status = outputs(probe, good, "depth/image", "depth/status")
    np.testing.assert_allclose(depth_array(depth), relative_depth(node, rgb), rtol=1e-6)
    assert (status.frames_received, status.frames_processed, status.frames_rejected) == (2, 1, 1)
    assert probe.for_stamp("depth/image", bad) is None


def test_max_input_pixels_changes_at_run_time(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "/rosout")
    assert node.set_parameters([Parameter("max_input_pixels", value=WIDTH * HEIGHT - 1)])[0].successful
    rgb = seeded_rgb()
    refused = send_msgs(probe, rgb_image(rgb, Time()), camera_info(WIDTH, HEIGHT, Time()))
    reason = f"Image of {WIDTH}x{HEIGHT} = {WIDTH * HEIGHT} pixels is above the limit of {WIDTH * HEIGHT - 1} pixels"
    wait_for(lambda: any(reason in line for line in probe.logs()), what="the refusal's warning")

    assert node.set_parameters([Parameter("max_input_pixels", value=WIDTH * HEIGHT)])[0].successful
    good = send_msgs(probe, rgb_image(rgb, Time()), camera_info(WIDTH, HEIGHT, Time()))
    (status,) = outputs(probe, good, "depth/status")
    assert (status.frames_received, status.frames_processed, status.frames_rejected) == (2, 1, 1)
    assert probe.for_stamp("depth/status", refused) is None


def _negative_fx():
    return camera_info(WIDTH, HEIGHT, Time(), fx=-100.0)


def _nan_cx_and_empty_p():
    info = camera_info(WIDTH, HEIGHT, Time())
    info.k[2], info.p = float("nan"), [0.0] * 12
    return info


def _roi_outside_the_sensor():
    info = camera_info(2 * WIDTH, 2 * HEIGHT, Time())
    info.roi = RegionOfInterest(x_offset=WIDTH + 1, y_offset=0, width=WIDTH, height=HEIGHT)
    return info


# Builds the bad CameraInfo of a good image -> the reason the node must log for it.
BAD_CAMERA_INFOS = {
    "negative fx": (_negative_fx, "CameraInfo P has invalid fx = -100.0"),
    "NaN cx and an empty P": (_nan_cx_and_empty_p, "CameraInfo K (P is empty) has invalid cx = nan"),
    "ROI outside the sensor": (_roi_outside_the_sensor, f"x_offset {WIDTH + 1} + {WIDTH} > {2 * WIDTH}"),
}


@pytest.mark.parametrize("case", BAD_CAMERA_INFOS)
def test_a_bad_camera_info_rejects_the_frame_and_nothing_is_published_for_it(ros, tiny_checkpoints, case):
    make, reason = BAD_CAMERA_INFOS[case]
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/camera_info", "depth/points", "depth/status",
                        "/rosout")
    rgb = seeded_rgb()
    bad = send_msgs(probe, rgb_image(rgb, Time()), make())
    wait_for(lambda: any(reason in line for line in probe.logs()), what=f"the warning {reason!r}")

    good = send_msgs(probe, rgb_image(rgb, Time()), camera_info(WIDTH, HEIGHT, Time()))
    _, status = outputs(probe, good, "depth/camera_info", "depth/status")  # reliable, in order: after any of bad's
    assert (status.frames_received, status.frames_processed, status.frames_rejected) == (2, 1, 1)
    for topic in ("depth/image", "depth/camera_info", "depth/points", "depth/status"):
        assert probe.for_stamp(topic, bad) is None, topic


def test_an_untrusted_frame_id_is_cut_short_in_the_log(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "/rosout")
    bad = rgb_image(seeded_rgb(), Time())
    bad.encoding, bad.header.frame_id = "yuv422", "x" * 10_000
    info = camera_info(WIDTH, HEIGHT, Time(), frame_id=bad.header.frame_id)
    send_msgs(probe, bad, info)
    wait_for(lambda: any(line.startswith("dropped frame") for line in probe.logs()), what="the rejection's warning")
    (line,) = [line for line in probe.logs() if line.startswith("dropped frame")]
    assert "'" + "x" * 64 + "...'" in line and len(line) < 400, len(line)
