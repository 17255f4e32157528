"""ppd-demo end to end (bag -> depth_node subprocess over DDS -> recorded bag -> report) and its parts: image
mode, image and video mode side by side (tiny random video models in the official formats), and video mode on
the bundled video model."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from checkpoint_files import write_video_checkpoints
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from ros_harness import bag_messages
from sensor_msgs.msg import Image, PointCloud2

from pixel_perfect_ros.inference import bundled
from pixel_perfect_ros.msg import DepthStatus
from pixel_perfect_ros.ros import simulated_lidar
from pixel_perfect_ros.tools import demo

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPORAL_ROWS = {"tae": "TAE (clip lsq disparity)", "flicker": "flicker (clip lsq disparity)"}
"""Summary keys of the temporal measures and their rows in the reports (``evaluation.sequence.headline_rows``)."""


@pytest.fixture()
def dds(ros, monkeypatch):
    """The demo's DDS settings for a test: the harness's domain, and the shared-memory profile the demo would
    set by default, here restored after the test."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros.domain_id))
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))


def statuses(depth_bag: Path) -> list[DepthStatus]:
    return [deserialize_message(raw, DepthStatus) for _, raw in bag_messages(depth_bag)["/depth/status"]]


def test_demo_end_to_end(dds, tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "report").mkdir(parents=True)
    (out / "report" / "stale.txt").write_text("from an earlier run")

    assert demo.main(["--out", str(out), "--frames", "3", "--size", "128x96"]) == 0

    printed = capsys.readouterr().out
    for line in ("rendering 3 frames", "[1/3]", "[2/3]", "[3/3]", "frame 1/3:", "frame 3/3:", "node: ",
                 "frames dropped: ", "none: AbsRel"):
        assert line in printed, printed
    assert not (out / "report" / "stale.txt").exists()  # the outputs of an earlier run are replaced

    source = bag_messages(out / "camera_bag")
    assert {topic: len(msgs) for topic, msgs in source.items()} == {
        "/camera/image": 3, "/camera/camera_info": 3, "/camera/depth_gt": 3, "/camera/pose": 3}
    stamps = [t for t, _ in source["/camera/image"]]

    depth = bag_messages(out / "depth_bag")
    assert set(depth) == {"/depth/image", "/depth/camera_info", "/depth/points", "/depth/status"}
    # On a busy machine the first frame can reach the node before it has matched the recorder's output
    # subscriptions (the lazy node then skips it, counted as dropped): every frame that comes out comes out
    # once, in order, with the source stamp as bag time.
    received = [t for t, _ in depth["/depth/image"]]
    assert len(received) >= 2
    for topic, msgs in depth.items():
        assert [t for t, _ in msgs] == [t for t in stamps if t in received], topic
    for (t, raw), (_, raw_gt) in zip(depth["/depth/image"], source["/camera/depth_gt"]):
        image, gt = deserialize_message(raw, Image), deserialize_message(raw_gt, Image)
        assert (image.width, image.height, image.encoding) == (128, 96, "32FC1")
        assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == t
        assert image.header.frame_id == gt.header.frame_id
    for _, raw in depth["/depth/points"]:
        cloud = deserialize_message(raw, PointCloud2)
        assert (cloud.width, cloud.height) == (128, 96)
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
    for _, raw in depth["/depth/status"]:
        status = deserialize_message(raw, DepthStatus)
        assert status.depth_mode == "sparse_topic" and status.is_metric  # aligned to the simulated LiDAR
    with Reader(out / "depth_bag") as reader:
        assert {c.topic: c.msgtype for c in reader.connections}["/depth/status"] == "pixel_perfect_ros/msg/DepthStatus"

    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["complete"] and [frame["stamp_ns"] for frame in metrics["frames"]] == received
    n = len(received)
    assert metrics["summary"]["frames"] == {"total": n, "scored": n, "unscored": 0, "metric": n}
    assert metrics["summary"]["headline"] == "none"  # every frame metric: scored as published
    for frame in metrics["frames"]:
        assert np.isfinite(frame["none.abs_rel"]) and np.isfinite(frame["lsq_disparity.abs_rel"])
        assert 0.0 <= frame["none.delta_1"] <= 1.0 and frame["chamfer_metric_m"] > 0.0
    assert np.isfinite(metrics["summary"]["tae"]["tae_metric"])  # poses from the bag
    notes = metrics["notes"]
    assert notes["model files"] == "the bundled model" and notes["model"] == status.model_id
    assert notes["frames dropped"].startswith(f"{3 - n} (") and "16-row LiDAR" in notes["source"]
    replay = json.loads((out / "report" / "replay.json").read_text())
    assert replay["frames_received"] == n and len(replay["frames"]) == 3
    assert "AbsRel" in (out / "report" / "report.html").read_text()


def test_a_bad_size_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(tmp_path / "demo"), "--size", "100x7"])
    assert exit_info.value.code != 0
    assert "multiples of 16" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_a_checkpoint_needs_its_semantics(tmp_path, capsys):
    (tmp_path / "ppd.pth").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(tmp_path / "demo"), "--checkpoint", str(tmp_path / "ppd.pth")])
    assert exit_info.value.code != 0
    assert "--semantics" in capsys.readouterr().err


def test_a_node_that_fails_to_start_is_reported(dds, tmp_path, capsys):
    for name in ("ppd.pth", "semantics.pth"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
    code = demo.main(["--out", str(tmp_path / "demo"), "--frames", "1", "--size", "32x32",
                      "--checkpoint", str(tmp_path / "ppd.pth"), "--semantics", str(tmp_path / "semantics.pth")])
    assert code == 1
    err = capsys.readouterr().err
    assert "the node exited" in err and "semantics.pth" in err, err


def test_node_parameters_pass_each_modes_files_through():
    parser = demo.build_parser()
    shipped = parser.parse_args(["--out", "x", "--mode", "both"])
    for mode in ("image", "video"):
        parameters = demo.node_parameters(shipped, mode)
        assert "checkpoint" not in parameters and "target_area" not in parameters and parameters["mode"] == mode
        assert {"depth_mode": "sparse_topic", "points_xyzrgb": True,
                "input_reliability": "reliable"}.items() <= parameters.items()
    official = parser.parse_args([
        "--out", "x", "--mode", "both", "--checkpoint", "/c/ppd_moge.pth", "--semantics", "/c/moge2.pt",
        "--semantics-type", "moge2", "--target-area", "49152", "--video-checkpoint", "/c/ppvd.pth",
        "--video-semantics", "/c/pi3.safetensors"])
    assert {"checkpoint": "/c/ppd_moge.pth", "semantics": "/c/moge2.pt", "semantics_type": "moge2",
            "target_area": 49152, "mode": "image"}.items() <= demo.node_parameters(official, "image").items()
    video = demo.node_parameters(official, "video")
    assert {"checkpoint": "/c/ppvd.pth", "semantics": "/c/pi3.safetensors", "mode": "video"}.items() <= video.items()
    assert "semantics_type" not in video and "target_area" not in video  # image mode's


@pytest.mark.parametrize("arguments, message", [
    (["--video-checkpoint", "v.pth", "--video-semantics", "v.safetensors"], "need --mode video or both"),
    (["--mode", "video", "--target-area", "49152"], "are for image mode"),
    (["--mode", "both", "--video-checkpoint", "v.pth"], "give --video-checkpoint and --video-semantics together"),
    (["--mode", "video", "--video-checkpoint", "v.pth", "--video-semantics", "missing"], "no such file: missing"),
])
def test_arguments_of_the_other_mode_or_without_their_pair_are_errors(tmp_path, monkeypatch, capsys, arguments,
                                                                    message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.pth").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", "demo", *arguments])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_video_mode_without_files_or_bundled_video_model_says_so_before_rendering(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bundled, "VIDEO_CHECKPOINT", tmp_path / "ppvd.pth")
    monkeypatch.setattr(bundled, "VIDEO_SEMANTICS", tmp_path / "pi3.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(tmp_path / "demo"), "--mode", "video"])
    assert exit_info.value.code == 2 and "bundled video model is not installed" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_demo_both_modes_side_by_side(dds, tmp_path, capsys):
    ppvd, pi3 = write_video_checkpoints(tmp_path)  # a tiny random PPVD: the machinery, not the accuracy
    out = tmp_path / "demo"
    (out / "depth_bag").mkdir(parents=True)  # an earlier image-mode run's, removed

    assert demo.main(["--out", str(out), "--mode", "both", "--frames", "4", "--size", "64x48",
                      "--video-checkpoint", str(ppvd), "--video-semantics", str(pi3)]) == 0

    assert sorted(p.name for p in out.iterdir()) == ["camera_bag", "image", "report", "video"]
    for mode in ("image", "video"):
        status = statuses(out / mode / "depth_bag")
        assert len(status) == 4 and {(s.mode, s.depth_mode, s.is_metric) for s in status} == {
            (mode, "sparse_topic", True)}
        run = json.loads((out / mode / "report" / "metrics.json").read_text())
        assert run["notes"]["mode"] == mode and run["summary"]["frames"]["scored"] == 4
    assert status[0].model_id == "ppvd.pth + pi3.safetensors (pi3)"  # the video run's
    assert run["notes"]["model files"] == f"the given files {ppvd} + {pi3}"

    side_by_side = json.loads((out / "report" / "metrics.json").read_text())
    assert side_by_side["complete"] and list(side_by_side["runs"]) == ["image", "video"]
    assert side_by_side["notes"]["source"].startswith("synthetic bag, 4 frames at 64x48")  # shared by both runs
    page = (out / "report" / "report.html").read_text()
    assert "<th>image</th><th>video</th>" in page
    assert 'href="../image/report/report.html"' in page and 'href="../video/report/report.html"' in page
    printed = capsys.readouterr().out
    for key, name in TEMPORAL_ROWS.items():
        values = [summary["tae"][key] for summary in side_by_side["runs"].values()]
        assert all(math.isfinite(value) for value in values), key
        assert f"<td>{name}</td>" in page
        (row,) = [line for line in printed.splitlines() if line.startswith(f"| {name} |")]
        assert [float(cell) for cell in row.strip("| ").split(" | ")[1:]] == pytest.approx(values, rel=1e-3)


def test_demo_video_mode_runs_the_bundled_video_model(dds, tmp_path):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--mode", "video", "--frames", "6", "--size", "128x96"]) == 0
    status = statuses(out / "depth_bag")
    assert len(status) == 6 and status[-1].mode == "video" and status[-1].video_cache_state == "ready"
    assert status[-1].model_id == "bundled ppvd.pth + pi3.safetensors (pi3)"
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["notes"]["model files"] == "the bundled video model"
    assert all(math.isfinite(metrics["summary"]["tae"][key]) for key in TEMPORAL_ROWS)


def test_simulated_lidar_keeps_16_rows_and_every_second_column():
    depth = np.arange(96 * 128, dtype=np.float32).reshape(96, 128) + 1.0
    sparse = simulated_lidar.simulated_lidar(depth)
    rows = np.flatnonzero(np.isfinite(sparse).any(axis=1))
    assert len(rows) == simulated_lidar.LIDAR_ROWS and rows[0] == 0 and rows[-1] == 95
    assert np.ptp(np.diff(rows)) <= 1  # evenly spaced
    kept = np.isfinite(sparse)
    assert kept.sum() == simulated_lidar.LIDAR_ROWS * 64 and kept[rows][:, ::2].all()
    np.testing.assert_array_equal(sparse[kept], depth[kept])
