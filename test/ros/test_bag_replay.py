"""ppd-bag-replay over real DDS: a depth_node process, the replayer and the recorder; its errors and options."""
import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from ros_harness import bag_messages, sigterm_tool
from sensor_msgs.msg import CompressedImage

from pixel_perfect_ros.msg import DepthStatus
from pixel_perfect_ros.ros import node_process, replayer
from pixel_perfect_ros.ros.bag_io import BagRecorder, CameraTopics, camera_frames
from pixel_perfect_ros.ros.conversions import depth_to_image, image_to_rgb8
from pixel_perfect_ros.ros.synthetic_bag import synthetic_camera_bag
from pixel_perfect_ros.tools import bag_replay

REPO_ROOT = Path(__file__).resolve().parents[2]
FRAMES, FPS = 6, 10.0
TOPICS = ["--image-topic", "/camera/image", "--camera-info-topic", "/camera/camera_info",
          "--depth-topic", "/camera/depth_gt", "--pose-topic", "/camera/pose"]


@pytest.fixture(scope="module")
def camera_bag(tmp_path_factory) -> Path:
    """6 frames, 128x96, 10 fps, with ground-truth depth and poses."""
    return synthetic_camera_bag(tmp_path_factory.mktemp("bags") / "camera", FRAMES, 96, 128, seed=5, fps=FPS)


@pytest.fixture()
def dds(ros, monkeypatch):
    """This test's own domain id, and the shared-memory profile the tool sets by default (restored after)."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros.domain_id))
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))


def image_stamps(bag) -> list[int]:
    return [t for t, _ in bag_messages(bag)["/camera/image"]]


def check_counts(stats: dict, published: int) -> None:
    """Published, received and dropped frames and the latencies agree with each other."""
    assert stats["frames_published"] == published
    assert stats["frames_received"] + stats["frames_dropped"] == published
    latencies = [f["latency_ms"] for f in stats["frames"] if f["latency_ms"] is not None]
    assert len(latencies) == stats["frames_received"] >= 1
    latency = stats["latency_ms"]
    assert 0.0 < latency["median"] <= latency["p95"] <= latency["max"] == max(latencies)


def test_replay_through_a_started_node_in_sim_time(dds, camera_bag, tmp_path, capsys):
    out = tmp_path / "replay"
    code = bag_replay.main([str(camera_bag), "--out", str(out), *TOPICS, "--start-node", "--clock",
                            "--namespace", "cam", "-p", "publish_points:=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "use_sim_time:=true" in printed and "frames dropped:" in printed and "node: " in printed

    stamps = image_stamps(camera_bag)
    stats = json.loads((out / "report" / "replay.json").read_text())
    check_counts(stats, FRAMES)
    assert [f["stamp_ns"] for f in stats["frames"]] == stamps
    received = [f["stamp_ns"] for f in stats["frames"] if f["latency_ms"] is not None]
    assert received[-1] == stamps[-1]  # latest frame wins: the last one is never dropped

    depth = bag_messages(out / "depth_bag")  # in the node's namespace; no cloud (publish_points false)
    assert set(depth) == {"/cam/depth/image", "/cam/depth/camera_info", "/cam/depth/status"}
    for topic, messages in depth.items():
        assert [t for t, _ in messages] == received, topic  # bag time = the source stamp, one per frame
    for t, raw in depth["/cam/depth/status"]:
        status = deserialize_message(raw, DepthStatus)
        assert status.header.stamp.sec * 10**9 + status.header.stamp.nanosec == t
        # the node's clock follows /clock (bag time, 2023): the age is that of the frame, not 3 years
        assert 0.0 <= status.age_ms < 5000.0
    assert stats["node_frames_dropped"] is not None and "bundled" in stats["model_id"]

    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["complete"] and metrics["notes"]["frames published"].startswith(f"{FRAMES} in ")
    summary = metrics["summary"]
    assert summary["frames"]["total"] == summary["frames"]["scored"] == len(received)
    for name in ("ransac_log.abs_rel", "lsq_disparity.abs_rel", "chamfer_ransac_m", "sampling_ms"):
        assert np.isfinite(summary["metrics"][name]["mean"]), name
    assert 0.0 < summary["metrics"]["ransac_log.abs_rel"]["mean"] < 1.0
    assert (out / "report" / "report.html").stat().st_size > 0


def test_rate_2_into_a_running_node(dds, camera_bag, tmp_path, capsys):
    node = node_process.NodeProcess(node_process.node_command({}))  # not started by the tool
    try:
        code = bag_replay.main([str(camera_bag), "--out", str(tmp_path / "replay"), *TOPICS, "--rate", "2"])
        node.stop()
    finally:
        node.close()
    assert code == 0
    assert "using a running depth_node" in capsys.readouterr().out
    stats = json.loads((tmp_path / "replay" / "report" / "replay.json").read_text())
    check_counts(stats, FRAMES)
    assert stats["bag_span_s"] == pytest.approx((FRAMES - 1) / FPS)
    # twice as fast as the bag: never early, and well short of the bag's own span
    assert 0.98 * stats["bag_span_s"] / 2 <= stats["publish_span_s"] < 0.8 * stats["bag_span_s"]


def compressed_bag(source: Path, path: Path, frames: int) -> Path:
    """The first ``frames`` of a synthetic camera bag with PNG CompressedImages (and CameraInfo, GT depth)."""
    topics = CameraTopics(image="/camera/image", camera_info="/camera/camera_info", depth="/camera/depth_gt")
    with BagRecorder(path) as recorder:
        for _, frame in zip(range(frames), camera_frames(source, topics)):
            bgr = cv2.cvtColor(image_to_rgb8(frame.image), cv2.COLOR_RGB2BGR)
            png = cv2.imencode(".png", bgr)[1].tobytes()
            image = CompressedImage(header=frame.image.header, format="png", data=png)
            recorder.write("/camera/image/compressed", image, frame.stamp_ns)
            recorder.write("/camera/camera_info", frame.camera_info, frame.stamp_ns)
            recorder.write("/camera/depth_gt", depth_to_image(frame.gt_depth, frame.image.header), frame.stamp_ns)
    return path


def test_a_compressed_bag_paced(dds, camera_bag, tmp_path, capsys):
    bag = compressed_bag(camera_bag, tmp_path / "compressed", 3)
    code = bag_replay.main([str(bag), "--out", str(tmp_path / "replay"), "--image-topic", "/camera/image/compressed",
                            "--camera-info-topic", "/camera/camera_info", "--depth-topic", "/camera/depth_gt",
                            "--paced", "--start-node"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "use_compressed:=true" in printed and "frame 3/3:" in printed
    stats = json.loads((tmp_path / "replay" / "report" / "replay.json").read_text())
    check_counts(stats, 3)
    # Paced: one frame at a time, each after the previous one's outputs. On a busy machine the first frame can
    # reach the node before it has matched the recorder's output subscriptions (a lazy node then skips it):
    # that frame is counted as dropped after the timeout, and the others still come out, in order, once each.
    assert stats["frames_received"] >= 2
    recorded = [t for t, _ in bag_messages(tmp_path / "replay" / "depth_bag")["/depth/image"]]
    assert len(recorded) == stats["frames_received"]
    assert recorded == [t for t in image_stamps(camera_bag)[:3] if t in recorded]


def test_ctrl_c_closes_the_bag_and_marks_the_report_incomplete(dds, camera_bag, tmp_path, monkeypatch):
    record = replayer.Replayer._record

    def record_then_interrupt(self, name, topic, msg):  # Ctrl-C once the first frame's status is recorded
        record(self, name, topic, msg)
        if name == "depth/status":
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(replayer.Replayer, "_record", record_then_interrupt)
    out = tmp_path / "replay"
    assert bag_replay.main([str(camera_bag), "--out", str(out), *TOPICS, "--rate", "0.2", "--start-node"]) == 130
    stats = json.loads((out / "report" / "replay.json").read_text())
    assert not stats["complete"] and 1 <= stats["frames_published"] < FRAMES
    assert bag_messages(out / "depth_bag")["/depth/status"]  # the bag was closed: it reads back
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert not metrics["complete"] and "INTERRUPTED" in metrics["notes"]["replay"]
    assert "INCOMPLETE" in (out / "report" / "report.html").read_text()


def test_sigterm_closes_the_bag_and_marks_the_report_incomplete(dds, tmp_path):
    frames = 40
    bag = synthetic_camera_bag(tmp_path / "long", frames, 48, 64, seed=7, supersample=1, fps=FPS)
    out = tmp_path / "replay"
    code, printed = sigterm_tool("pixel_perfect_ros.tools.bag_replay",
                                 [str(bag), "--out", str(out), *TOPICS, "--paced", "--start-node"],
                                 tmp_path / "output.txt", rf"frame \d+/{frames}: \d+ ms", REPO_ROOT)  # outputs recorded
    assert code == 143, printed
    assert "Traceback" not in printed
    stats = json.loads((out / "report" / "replay.json").read_text())
    assert not stats["complete"] and stats["frames_published"] < frames and stats["frames_received"] >= 1
    recorded = bag_messages(out / "depth_bag")  # closed: metadata written, it reads back
    assert len(recorded["/depth/image"]) == stats["frames_received"]
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert not metrics["complete"] and "INTERRUPTED" in metrics["notes"]["replay"]
    assert "INCOMPLETE" in (out / "report" / "report.html").read_text()


def test_no_running_node_says_what_it_waited_for(dds, camera_bag, tmp_path, capsys):
    code = bag_replay.main([str(camera_bag), "--out", str(tmp_path / "replay"), *TOPICS, "--timeout", "0.5"])
    assert code == 1
    err = capsys.readouterr().err
    assert "no depth_node within" in err and "a subscriber on /image" in err and "a publisher of /depth/status" in err


@pytest.mark.parametrize("args, message", [
    (["--image-topic", "/camera/nope"], "no topic '/camera/nope' (image); the bag has:"),
    (["--image-topic", "/camera/image", "--depth-topic", "/camera/pose"], "expected sensor_msgs/msg/Image"),
])
def test_a_missing_or_mistyped_topic_is_exit_2(camera_bag, tmp_path, capsys, args, message):
    assert bag_replay.main([str(camera_bag), "--out", str(tmp_path / "replay"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "replay").exists()


def test_a_corrupt_bag_is_exit_2(tmp_path, capsys):
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag")
    assert bag_replay.main([str(tmp_path / "bag"), "--out", str(tmp_path / "replay"), "--image-topic", "/i"]) == 2
    assert "cannot read the bag" in capsys.readouterr().err


def test_an_earlier_output_is_not_overwritten(camera_bag, tmp_path, capsys):
    (tmp_path / "replay" / "depth_bag").mkdir(parents=True)
    assert bag_replay.main([str(camera_bag), "--out", str(tmp_path / "replay"), "--image-topic", "/camera/image"]) == 2
    assert "depth_bag exists" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["-p", "lazy:=false"], "--start-node"),
    (["--rate", "2", "--paced"], "not allowed with"),
    (["--rate", "0"], "a finite number > 0"),
    (["--start-node", "-p", "lazy"], "NAME:=VALUE"),
    (["--start-node", "-p", "chekpoint:=ppd.pth"], "unknown depth_node parameter(s) chekpoint"),
])
def test_bad_arguments_are_argparse_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bag_replay.main(["bag", "--out", "out", "--image-topic", "/i", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_node_command_and_namespace():
    assert bag_replay.ros_namespace("/") == "" and bag_replay.ros_namespace("cam/") == "/cam"
    command = node_process.node_command({"lazy": False, "target_area": 4096, "depth_mode": "relative"}, "/cam")
    assert command[command.index("--ros-args"):] == ["--ros-args", "-r", "__ns:=/cam", "-p", "lazy:=false",
                                                     "-p", "target_area:=4096", "-p", "depth_mode:=relative"]
