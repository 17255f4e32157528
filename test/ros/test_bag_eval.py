"""ppd-bag-eval end to end on small synthetic bags with the bundled model: outputs, inputs, failures, parallel runs;
video mode on tiny random PPVD + Pi3 files."""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray
from checkpoint_files import write_video_checkpoints
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from ros_harness import bag_messages, sigterm_tool

from pixel_perfect_ros.inference.video_pipeline import PixelPerfectVideoDepth
from pixel_perfect_ros.inference.video_stream import StreamingVideoDepth
from pixel_perfect_ros.ros import bag_evaluation, parameter_files
from pixel_perfect_ros.ros.bag_io import BagRecorder, CameraTopics, camera_frames
from pixel_perfect_ros.ros.conversions import depth_to_image, message_to_rgb8, rgb8_to_image
from pixel_perfect_ros.ros.processors import ImageProcessor
from pixel_perfect_ros.ros.synthetic_bag import synthetic_camera_bag
from pixel_perfect_ros.evaluation.sequence import Evaluation
from pixel_perfect_ros.tools import bag_eval

REPO_ROOT = Path(__file__).resolve().parents[2]
H, W, FRAMES = 96, 128, 4
TOPICS = ["--image-topic", "/camera/image", "--camera-info-topic", "/camera/camera_info",
          "--depth-topic", "/camera/depth_gt"]
OUTPUTS = {"/depth/image": Image, "/depth/camera_info": CameraInfo, "/depth/points": PointCloud2}


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    """Synthetic camera bags of FRAMES frames at W x H: sqlite3 ('room', 'other') and MCAP ('mcap')."""
    root = tmp_path_factory.mktemp("bags")
    return {"room": synthetic_camera_bag(root / "room", FRAMES, H, W, seed=3),
            "other": synthetic_camera_bag(root / "more" / "other", FRAMES, H, W, seed=5),
            "mcap": synthetic_camera_bag(root / "mcap", FRAMES, H, W, seed=4, storage="mcap")}


def image_stamps(bag: Path) -> list[int]:
    return [t for t, _ in bag_messages(bag)["/camera/image"]]


def check_output_bag(path: Path, stamps: list[int]) -> None:
    """Every output topic holds one message per stamp, at that bag time and header stamp, of the right size."""
    messages = bag_messages(path)
    assert set(messages) == set(OUTPUTS)
    for topic, msg_type in OUTPUTS.items():
        assert [t for t, _ in messages[topic]] == stamps, topic
        for t, raw in messages[topic]:
            msg = deserialize_message(raw, msg_type)
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t
            assert (msg.width, msg.height) == (W, H)


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_one_bag_end_to_end(bags, tmp_path, capsys):
    out = tmp_path / "out"
    assert bag_eval.main([str(bags["room"]), "--out", str(out), *TOPICS, "--pose-topic", "/camera/pose"]) == 0

    check_output_bag(out / "room" / "depth_bag", image_stamps(bags["room"]))
    saved = metrics(out / "room")
    assert saved["complete"] is True and len(saved["frames"]) == FRAMES
    summary = saved["summary"]
    assert summary["frames"] == {"total": FRAMES, "scored": FRAMES, "unscored": 0, "metric": 0}
    for name in ("ransac_log.abs_rel", "ransac_log.delta_1", "lsq_disparity.abs_rel", "chamfer_ransac_m", "total_ms"):
        assert math.isfinite(summary["metrics"][name]["mean"]), name
    assert 0 < summary["metrics"]["ransac_log.abs_rel"]["mean"] < 1
    assert 0 <= summary["tae"]["tae"] < 1 and summary["tae"]["frames"] == FRAMES
    assert "none.abs_rel" not in summary["metrics"]  # relative depth: no unaligned score
    assert len((out / "room" / "frames.csv").read_text().splitlines()) == FRAMES + 1
    page = (out / "room" / "report.html").read_text()
    assert "INCOMPLETE" not in page and "data:image/png;base64," in page
    printed = capsys.readouterr().out
    assert "[1/1] room: ok, 4 frames" in printed and "ransac_log" in printed
    assert not (out / "report.html").exists()  # one bag: no aggregate


def test_mcap_in_and_out_with_stride_and_a_metric_mode(bags, tmp_path):
    out = tmp_path / "out"
    assert bag_eval.main([str(bags["mcap"]), "--out", str(out), *TOPICS, "--stride", "2", "--storage", "mcap",
                          "-p", "depth_mode:=fixed_range", "-p", "near_m:=1", "-p", "far_m:=4.5"]) == 0
    assert list((out / "mcap" / "depth_bag").glob("*.mcap"))
    check_output_bag(out / "mcap" / "depth_bag", image_stamps(bags["mcap"])[::2])
    summary = metrics(out / "mcap")["summary"]
    assert summary["frames"]["metric"] == 2 and summary["headline"] == "none"
    assert math.isfinite(summary["metrics"]["none.abs_rel"]["mean"])  # metric mode: scored as published too
    assert math.isfinite(summary["metrics"]["chamfer_metric_m"]["mean"])


def test_compressed_images_and_an_undecodable_one(bags, tmp_path):
    source = tmp_path / "compressed"
    topics = CameraTopics("/camera/image", "/camera/camera_info", "/camera/depth_gt")
    with BagRecorder(source) as recorder:
        for i, frame in enumerate(camera_frames(bags["room"], topics)):
            rgb = np.frombuffer(frame.image.data, np.uint8).reshape(H, W, 3)
            data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes() if i != 1 else b"garbage"
            recorder.write("/camera/image", CompressedImage(header=frame.image.header, format="jpeg", data=data),
                           frame.stamp_ns)
            recorder.write("/camera/camera_info", frame.camera_info, frame.stamp_ns)
            recorder.write("/camera/depth_gt", depth_to_image(frame.gt_depth, frame.image.header), frame.stamp_ns)
    out = tmp_path / "out"
    assert bag_eval.main([str(source), "--out", str(out), *TOPICS]) == 0
    saved = metrics(out / "compressed")
    assert saved["summary"]["frames"]["scored"] == FRAMES - 1
    assert saved["notes"]["frames rejected"] == "1"
    assert any("cannot decode CompressedImage" in key for key in saved["notes"])
    assert len(bag_messages(out / "compressed" / "depth_bag")["/depth/image"]) == FRAMES - 1


def test_missing_topic_exits_2_listing_the_bags_topics(bags, tmp_path, capsys):
    out = tmp_path / "out"
    assert bag_eval.main([str(bags["room"]), "--out", str(out), "--image-topic", "/camera/image",
                          "--camera-info-topic", "/camera/camera_info", "--depth-topic", "/camera/depth"]) == 2
    error = capsys.readouterr().err
    assert "no topic '/camera/depth'" in error and "/camera/depth_gt  [sensor_msgs/msg/Image]" in error
    assert not (out / "room").exists()  # unusable from the start: nothing written


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_corrupt_bag_exits_2_and_writes_nothing(bags, tmp_path, capsys, damage):
    broken = tmp_path / "broken"
    (broken).mkdir()
    (broken / "metadata.yaml").write_text((bags["room"] / "metadata.yaml").read_text())
    if damage == "truncate":
        data = (bags["room"] / "room.db3").read_bytes()
        (broken / "room.db3").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert bag_eval.main([str(broken), "--out", str(out), *TOPICS]) == 2
    assert "cannot read the bag" in capsys.readouterr().err
    assert not (out / "broken").exists()


def test_a_bag_that_fails_part_way_is_marked_incomplete(bags, tmp_path, capsys):
    source = tmp_path / "badlater"
    topics = CameraTopics("/camera/image", "/camera/camera_info", "/camera/depth_gt")
    with BagRecorder(source) as recorder:
        for i, frame in enumerate(camera_frames(bags["room"], topics)):
            depth = (depth_to_image(frame.gt_depth, frame.image.header) if i < 2 else  # then an rgb8 "depth"
                     rgb8_to_image(np.zeros((H, W, 3), np.uint8), frame.image.header))
            for topic, msg in (("/camera/image", frame.image), ("/camera/camera_info", frame.camera_info),
                               ("/camera/depth_gt", depth)):
                recorder.write(topic, msg, frame.stamp_ns)
    out = tmp_path / "out"
    assert bag_eval.main([str(source), "--out", str(out), *TOPICS]) == 2
    assert "ground-truth depth on /camera/depth_gt" in capsys.readouterr().err
    saved = metrics(out / "badlater")
    assert saved["complete"] is False and len(saved["frames"]) == 2 and "rgb8" in saved["notes"]["status"]
    assert "INCOMPLETE" in (out / "badlater" / "report.html").read_text()
    check_output_bag(out / "badlater" / "depth_bag", image_stamps(bags["room"])[:2])


def test_ctrl_c_closes_the_bag_and_marks_the_report(bags, tmp_path, monkeypatch):
    process = ImageProcessor.process
    calls = []

    def interrupted_on_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return process(self, *args, **kwargs)
    monkeypatch.setattr(ImageProcessor, "process", interrupted_on_the_third)
    out = tmp_path / "out"
    assert bag_eval.main([str(bags["room"]), "--out", str(out), *TOPICS]) == 130
    check_output_bag(out / "room" / "depth_bag", image_stamps(bags["room"])[:2])
    saved = metrics(out / "room")
    assert saved["complete"] is False and len(saved["frames"]) == 2
    assert "INCOMPLETE" in (out / "room" / "report.html").read_text()


def test_sigterm_closes_the_bag_and_marks_the_report(tmp_path):
    frames = 60
    long_bag = synthetic_camera_bag(tmp_path / "long", frames, 48, 64, seed=7, supersample=1)
    out = tmp_path / "out"
    code, err = sigterm_tool("pixel_perfect_ros.tools.bag_eval", [str(long_bag), "--out", str(out), *TOPICS],
                             tmp_path / "output.txt", rf"\| *[1-9]\d*/{frames} \[", REPO_ROOT)  # a frame done
    assert code == 143, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    saved = metrics(out / "long")
    assert saved["complete"] is False and saved["notes"]["status"] == "interrupted (SIGTERM)"
    assert "INCOMPLETE" in (out / "long" / "report.html").read_text()
    stamps = [frame["stamp_ns"] for frame in saved["frames"]]
    assert 1 <= len(stamps) < frames
    recorded = bag_messages(out / "long" / "depth_bag")  # closed: metadata.yaml written, the reader opens it
    assert {topic: [t for t, _ in messages] for topic, messages in recorded.items()} == dict.fromkeys(OUTPUTS, stamps)


def test_a_stop_request_and_ctrl_c_while_writing(bags, tmp_path, monkeypatch):
    topics = CameraTopics("/camera/image", "/camera/camera_info", "/camera/depth_gt")
    job = bag_evaluation.BagJob(bags["room"], tmp_path / "room", topics, parameter_files.node_parameters(None, []),
                                5_000_000, None, None, 1, "sqlite3")
    asked = []
    # stop asked as the pool's stop event is
    result = bag_evaluation.evaluate_bag(job, stop=lambda: asked.append(1) or len(asked) > 2)
    assert result["status"] == "interrupted" and result["frames"] == 2
    assert metrics(tmp_path / "room")["complete"] is False

    write = Evaluation.write

    def interrupted_write(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the report is written: it is finished first
        return write(self, *args, **kwargs)
    monkeypatch.setattr(Evaluation, "write", interrupted_write)
    result = bag_evaluation.evaluate_bag(job)
    assert result["status"] == "interrupted" and "complete report" in result["message"]
    assert metrics(tmp_path / "room")["complete"] is True and result["frames"] == FRAMES


def test_two_bags_in_a_process_pool_give_an_aggregated_report(bags, tmp_path, capsys):
    out = tmp_path / "out"
    # a folder of bags ('more' holds 'other') and a glob
    assert bag_eval.main([str(bags["other"].parent), str(bags["room"].parent / "roo*"), "--out", str(out), *TOPICS,
                          "--jobs", "2"]) == 0
    for name in ("room", "other"):
        check_output_bag(out / name / "depth_bag", image_stamps(bags[name]))
    aggregate = metrics(out)
    assert aggregate["complete"] is True and set(aggregate["bags"]) == {"room", "other"}
    assert aggregate["aggregate"]["frames"]["scored"] == 2 * FRAMES
    means = [aggregate["bags"][name]["summary"]["metrics"]["ransac_log.abs_rel"]["mean"] for name in ("room", "other")]
    assert aggregate["aggregate"]["metrics"]["ransac_log.abs_rel"]["mean"] == pytest.approx(np.mean(means))
    page = (out / "report.html").read_text()
    assert 'href="room/report.html"' in page and 'href="other/report.html"' in page
    assert "all bags (8 scored frames)" in capsys.readouterr().out


@pytest.fixture()
def local_ray():
    """A Ray instance with 2 CPUs started by this test process; its address."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_ray_runs_the_same_per_bag_work(bags, tmp_path, local_ray):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "pixel_perfect_ros.tools.bag_eval", str(bags["room"]),
                             str(bags["mcap"]), "--out", str(out), *TOPICS, "--ray", local_ray],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("room", "mcap"):
        check_output_bag(out / name / "depth_bag", image_stamps(bags[name]))
        assert metrics(out / name)["complete"] is True
    assert set(metrics(out)["bags"]) == {"room", "mcap"}


# --------------------------------------------------------------------------------------------------
# Video mode
# --------------------------------------------------------------------------------------------------

VIDEO_FRAMES = 8
"""3 filling the cache, then a group of 4 and an incomplete group of 1 (K = 4)."""
ALL_TOPICS = CameraTopics("/camera/image", "/camera/camera_info", "/camera/depth_gt", pose="/camera/pose")


@pytest.fixture(scope="module")
def video_setup(tmp_path_factory) -> tuple[Path, tuple[Path, Path]]:
    """A synthetic bag of VIDEO_FRAMES frames, and the tiny video model files (ppvd.pth, pi3.safetensors)."""
    root = tmp_path_factory.mktemp("video")
    return synthetic_camera_bag(root / "clip", VIDEO_FRAMES, H, W, seed=6), write_video_checkpoints(root)


def video_params(checkpoints: tuple[Path, Path], frames_per_window: int) -> list[str]:
    ppvd, pi3 = checkpoints
    return ["-p", "mode:=video", "-p", f"checkpoint:={ppvd}", "-p", f"semantics:={pi3}", "-p", "steps:=1",
            "-p", f"video_frames_per_window:={frames_per_window}"]


def offline_stream(checkpoints, rgbs: list[np.ndarray], frames_per_window: int) -> list[np.ndarray]:
    """The normalised depth of each frame streamed outside ROS (the last group flushed), in order."""
    model = PixelPerfectVideoDepth.from_checkpoints(*checkpoints, steps=1, seed=0)
    stream = StreamingVideoDepth(model, frames_per_window=frames_per_window)
    out = [result for i, rgb in enumerate(rgbs) for result in stream.push(rgb, i)] + stream.flush()
    assert [stamp for stamp, _ in out] == list(range(len(rgbs)))
    return [depth for _, depth in out]


@pytest.mark.parametrize("frames_per_window", [1, 4])
def test_video_mode_gives_every_frame_its_streamed_depth(video_setup, tmp_path, frames_per_window):
    bag, checkpoints = video_setup
    out = tmp_path / "out"
    assert bag_eval.main([str(bag), "--out", str(out), *TOPICS, "--pose-topic", "/camera/pose",
                          *video_params(checkpoints, frames_per_window)]) == 0

    stamps = image_stamps(bag)
    check_output_bag(out / "clip" / "depth_bag", stamps)  # the incomplete last group flushed, in order
    saved = metrics(out / "clip")
    notes = saved["notes"]
    assert saved["complete"] is True and notes["mode"] == "video"
    assert (notes["video streaming"], notes["video frames per window"]) == ("stream_exact", str(frames_per_window))
    assert (notes["video resets"], notes["frames not predicted"], notes["frames read"]) == ("0", "0", str(VIDEO_FRAMES))
    assert saved["summary"]["frames"]["scored"] == VIDEO_FRAMES
    assert saved["summary"]["tae"]["frames"] == VIDEO_FRAMES and math.isfinite(saved["summary"]["tae"]["tae"])
    assert [frame["stamp_ns"] for frame in saved["frames"]] == stamps

    rgbs = [message_to_rgb8(frame.image) for frame in camera_frames(bag, ALL_TOPICS)]
    expected = offline_stream(checkpoints, rgbs, frames_per_window)
    for (_, raw), normalised in zip(bag_messages(out / "clip" / "depth_bag")["/depth/image"], expected, strict=True):
        depth = np.frombuffer(deserialize_message(raw, Image).data, "<f4").reshape(H, W)
        np.testing.assert_allclose(depth, np.exp(normalised.astype(np.float64)).astype(np.float32), rtol=1e-5)


def test_video_mode_resets_when_the_stamps_go_back(video_setup, tmp_path):
    source, checkpoints = video_setup
    frames = list(camera_frames(source, ALL_TOPICS))
    looped = tmp_path / "looped"
    with BagRecorder(looped) as recorder:  # as a looping player is recorded: the header stamps go back
        for n, frame in enumerate(frames[:4] + frames[:1]):
            time_ns = (n + 1) * 10**9  # recording time goes on
            for topic, msg in (("/camera/camera_info", frame.camera_info),
                               ("/camera/depth_gt", depth_to_image(frame.gt_depth, frame.image.header)),
                               ("/camera/image", frame.image)):
                recorder.write(topic, msg, time_ns)
    out = tmp_path / "out"
    assert bag_eval.main([str(looped), "--out", str(out), *TOPICS, *video_params(checkpoints, 2)]) == 0

    # 3 frames fill the cache, the 4th waits for its group of 2 and is dropped by the reset; the first
    # frame again is the anchor of a fresh stream: the same depth as the first time
    notes = metrics(out / "looped")["notes"]
    assert (notes["video resets"], notes["frames not predicted"], notes["frames read"]) == ("1", "1", "5")
    written = bag_messages(out / "looped" / "depth_bag")["/depth/image"]  # in bag time order
    assert sorted(t for t, _ in written) == sorted(f.stamp_ns for f in frames[:3] + frames[:1])
    first = [deserialize_message(raw, Image).data for t, raw in written if t == frames[0].stamp_ns]
    assert len(first) == 2 and first[0] == first[1]


def test_video_mode_needs_both_model_files_or_none(bags, tmp_path, capsys):
    assert bag_eval.main([str(bags["room"]), "--out", str(tmp_path / "out"), *TOPICS, "-p", "mode:=video",
                          "-p", f"checkpoint:={tmp_path / 'ppvd.pth'}"]) == 2
    assert "semantics" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------

def test_node_parameters_from_the_shipped_file_and_overrides():
    settings = parameter_files.node_parameters(REPO_ROOT / "config" / "depth.yaml", [
        ("depth_mode", "fixed_range"), ("far_m", "20"), ("publish_points", "false")])
    assert settings.depth_mode == "fixed_range" and settings.far_m == 20.0 and settings.publish_points is False
    assert settings.steps == 4


@pytest.mark.parametrize("override, message", [
    (("stepz", "4"), "unknown parameter(s) stepz; depth_node's are: checkpoint, semantics"),
    (("steps", "four"), "parameter steps takes a int"),
    (("depth_mode", "metric"), "depth_mode must be one of"),
])
def test_bad_node_parameters(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parameter_files.node_parameters(None, [override])


def test_bad_arguments_exit_2(bags, tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    assert bag_eval.main([str(bags["room"]), *out, *TOPICS, "-p", "stepz:=4"]) == 2
    assert "unknown parameter(s) stepz" in capsys.readouterr().err
    assert bag_eval.main([str(tmp_path / "nothing*"), *out, *TOPICS]) == 2
    assert bag_eval.main([str(bags["room"]), *out, "--image-topic", "/camera/image"]) == 2
    assert "--camera-info-topic" in capsys.readouterr().err
    assert bag_eval.main([str(bags["room"]), "--out", str(bags["room"].parent), *TOPICS]) == 2
    assert "would overwrite the input bag" in capsys.readouterr().err
