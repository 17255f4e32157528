"""Per-pixel depth uncertainty from several diffusion samples (parameters uncertainty_samples and
uncertainty_threshold): ``depth/uncertainty``, the uncertainty filter, ``depth/status``, /diagnostics,
laziness, parameter checks, and ppd-bag-eval's uncertainty metrics.

The node tests run over real rclpy and DDS (``ros_harness``). Those that check values pixel by pixel
replace the model with ``SampledPipeline``, which returns fixed samples, because a random-weight model
does not produce samples that disagree (or decode invalid) where a test needs them; decoding, filters,
encoding and DDS are real. The others run the tiny random-weight model with its real samples.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from checkpoint_files import write_video_checkpoints
from rclpy.exceptions import InvalidParameterValueException
from rclpy.parameter import Parameter
from ros_harness import OUTPUT_QOS, camera_info, connect, rgb_image, wait_for
from sensor_msgs.msg import Image, PointField

from pixel_perfect_ros.geometry.decoding import make_decoder
from pixel_perfect_ros.geometry.uncertainty import published_uncertainty, sample_spread, uncertain_mask
from pixel_perfect_ros.inference.pipeline import DepthPrediction
from pixel_perfect_ros.ros.conversions import pinhole_camera_info
from pixel_perfect_ros.ros.depth_node import DepthNode
from pixel_perfect_ros.ros.parameters import NodeSettings, check_settings
from pixel_perfect_ros.ros.processing import FrameSettings, ReadFrame, finish_frame

HEIGHT, WIDTH = 48, 64
"""Test image size; the harness's target_area (64 * 48) keeps it as the processing size."""
NEAR_M, FAR_M = 0.0, 10.0
"""fixed_range decoding of the fixed samples: with near 0, n <= 0 decodes invalid (NaN)."""
TIMINGS = dict.fromkeys(("preprocess", "semantics", "sampling", "postprocess"), 0.0)


# ------------------------------------------------------------------------------------------- helpers


def seeded_rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def fixed_samples(count: int = 3) -> np.ndarray:
    """(count, HEIGHT, WIDTH) normalised log-depth samples: a ramp whose samples spread more from left to
    right (relative spreads from 0 to about 0.3), and pixels whose samples are all NaN (rows 0-3, columns
    0-3: invalid depth), partly invalid (rows 4-7, columns 0-3: sample 0 at n < 0, the mean valid) and
    far beyond 16UC1's 65.535 m (rows 8-11, columns 0-3: n 2.5 = 400 m)."""
    rows = np.linspace(0.3, 0.8, HEIGHT, dtype=np.float32)[:, None]
    spread = np.linspace(0.0, 0.15, WIDTH, dtype=np.float32)[None, :]
    offsets = np.linspace(-1.0, 1.0, count, dtype=np.float32)[:, None, None]
    samples = (rows + offsets * spread).astype(np.float32)
    samples[:, 0:4, 0:4] = np.nan
    samples[0, 4:8, 0:4] = -0.1
    samples[:, 8:12, 0:4] = 2.5
    return samples


class SampledPipeline:
    """Stands in for the node's ``PixelPerfectDepth``: the first ``samples`` of ``fixed_samples()`` for every
    image (the image and processing size are the same here), their mean as the depth, as the model does.

    Has the attributes the node reads and sets (steps, target_area, seed, device, metric_model, samples).
    """

    def __init__(self, like):
        self.steps, self.target_area, self.seed, self.device = like.steps, like.target_area, like.seed, like.device
        self.samples = like.samples
        self.metric_model = None

    def __call__(self, rgb: np.ndarray, metric_reference: bool = False) -> DepthPrediction:
        samples = fixed_samples(max(self.samples, 2))[:self.samples]
        mean = samples.mean(axis=0)
        several = samples if self.samples > 1 else None
        return DepthPrediction(depth=mean, processing_depth=mean, timings_ms=dict(TIMINGS), samples=several,
                               processing_samples=several)


def start(ros, checkpoints, *topics: str, **parameters):
    """The depth node with ``parameters`` and a probe listening to ``topics`` (``depth/uncertainty``
    among them if named), all matched over DDS."""
    node = ros.depth_node(checkpoints, **parameters)
    probe = ros.probe(*[t for t in topics if t != "depth/uncertainty"])
    if "depth/uncertainty" in topics:
        probe.output_subscriptions["depth/uncertainty"] = probe.create_subscription(
            Image, "depth/uncertainty", lambda msg: probe._record("depth/uncertainty", msg), OUTPUT_QOS)
        wait_for(lambda: node._pub_uncertainty.get_subscription_count() > 0, what="depth/uncertainty subscription")
    connect(probe, node, *topics)
    return node, probe


def send_frame(probe, rgb: np.ndarray) -> Time:
    """Publish an rgb8 frame and its CameraInfo stamped now; returns the stamp."""
    stamp = probe.now()
    probe.send(rgb_image(rgb, stamp), camera_info(WIDTH, HEIGHT, stamp))
    return stamp


def outputs(probe, stamp: Time, *topics: str, timeout: float = 30.0) -> list:
    """The messages on ``topics`` for the frame stamped ``stamp`` (waits for all of them)."""
    wait_for(lambda: all(probe.for_stamp(topic, stamp) is not None for topic in topics), timeout,
             f"{', '.join(topics)} of the frame stamped {stamp.sec}.{stamp.nanosec:09d}")
    return [probe.for_stamp(topic, stamp) for topic in topics]


def pixels(msg: Image) -> np.ndarray:
    """(H, W) pixels of a 32FC1 or 16UC1 image, after checking its layout."""
    dtype = np.dtype({"32FC1": "<f4", "16UC1": "<u2"}[msg.encoding])
    row = msg.width * dtype.itemsize
    assert (msg.is_bigendian, msg.step, len(msg.data)) == (0, row, row * msg.height)
    return np.frombuffer(msg.data, dtype).reshape(msg.height, msg.width)


def cloud_z(msg) -> np.ndarray:
    """(height, width) z of an organized x, y, z cloud."""
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        (name, 4 * i, PointField.FLOAT32) for i, name in enumerate("xyz")]
    return np.frombuffer(msg.data, "<f4").reshape(msg.height, msg.width, 3)[..., 2]


def expected_by_hand(samples: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depth after the filter, uncertainty in metres, removed mask) of fixed_range samples, computed with
    numpy alone (not ``geometry.uncertainty``): the std of the decoded samples, +inf where some decode
    invalid, removal where std / depth > threshold (and +inf) when threshold > 0."""
    decoder = make_decoder("fixed_range", near_m=NEAR_M, far_m=FAR_M)
    depth = decoder(samples.mean(axis=0))
    decoded = np.stack([decoder(s) for s in samples]).astype(np.float64)
    valid = np.isfinite(depth)
    some_invalid = np.isnan(decoded).any(axis=0)
    std = np.where(some_invalid, np.inf, np.nan_to_num(decoded).std(axis=0))
    removed = np.zeros_like(valid)
    if threshold > 0:
        removed = valid & (std / np.where(valid, depth, 1.0) > threshold)
    depth = np.where(removed, np.nan, depth)
    return depth, np.where(np.isfinite(depth), std, np.nan), removed


# ---------------------------------------------------------------------------- finish_frame (no DDS)


def read_frame_of(height: int, width: int) -> ReadFrame:
    image = rgb_image(np.zeros((height, width, 3), np.uint8), Time(sec=5))
    K = np.array([[50.0, 0.0, width / 2], [0.0, 50.0, height / 2], [0.0, 0.0, 1.0]])
    info = pinhole_camera_info(K, width, height, image.header)
    return ReadFrame(image=image, info=info, rgb=np.zeros((height, width, 3), np.uint8), K=K,
                     P=np.hstack([K, np.zeros((3, 1))]), nonfinite_pixels=0, decode_ms=0.0)


@pytest.mark.parametrize("threshold", [0.0, 0.05])
@pytest.mark.parametrize("resolution", ["input", "processing"])
def test_finish_frame_decodes_each_sample_as_the_mean_and_filters_by_relative_spread(threshold, resolution):
    """The samples of the published resolution are the ones used; the spread, the filter and the published
    uncertainty are those of ``geometry.uncertainty`` on the frame's decoder (and agree with numpy)."""
    samples = fixed_samples(4)
    small = samples[:, ::2, ::2].copy()  # the "processing size": another size, to see which one is used
    prediction = DepthPrediction(depth=samples.mean(axis=0), processing_depth=small.mean(axis=0),
                                 timings_ms=dict(TIMINGS), samples=samples, processing_samples=small)
    node = NodeSettings(depth_mode="fixed_range", near_m=NEAR_M, far_m=FAR_M, uncertainty_samples=4,
                        uncertainty_threshold=threshold, output_resolution=resolution)
    processed = finish_frame(read_frame_of(HEIGHT, WIDTH), prediction, FrameSettings.of(node))

    used = samples if resolution == "input" else small
    decoder = make_decoder("fixed_range", near_m=NEAR_M, far_m=FAR_M)
    spread = sample_spread(decoder, used)
    depth = decoder(used.mean(axis=0))
    removed = uncertain_mask(spread, depth, threshold) if threshold else np.zeros(depth.shape, bool)
    depth[removed] = np.nan
    np.testing.assert_array_equal(processed.depth, depth)
    np.testing.assert_array_equal(processed.uncertainty, published_uncertainty(spread, depth, True))
    assert processed.uncertain_pixels_removed == removed.sum()
    assert processed.uncertainty_samples == 4
    assert pixels(processed.uncertainty_msg).shape == depth.shape
    np.testing.assert_array_equal(pixels(processed.uncertainty_msg), processed.uncertainty)  # +inf kept

    by_hand_depth, by_hand_uncertainty, by_hand_removed = expected_by_hand(used, threshold)
    np.testing.assert_array_equal(removed, by_hand_removed)
    np.testing.assert_array_equal(np.isnan(processed.depth), np.isnan(by_hand_depth))
    np.testing.assert_allclose(processed.uncertainty, by_hand_uncertainty, rtol=1e-5, atol=1e-4)  # float32 std
    if threshold:
        assert 0 < removed.sum() < np.isfinite(decoder(used.mean(axis=0))).sum()  # some, not all
        assert not np.isinf(processed.uncertainty).any()  # +inf is always above a threshold
    else:
        assert np.isinf(processed.uncertainty).any()  # rows 4-7: the samples disagree on validity


def test_finish_frame_without_samples_has_no_uncertainty():
    n = fixed_samples(3)[1]
    prediction = DepthPrediction(depth=n, processing_depth=n, timings_ms=dict(TIMINGS))
    node = NodeSettings(depth_mode="fixed_range", near_m=NEAR_M, far_m=FAR_M, uncertainty_threshold=0.01)
    processed = finish_frame(read_frame_of(HEIGHT, WIDTH), prediction, FrameSettings.of(node))
    assert (processed.uncertainty, processed.uncertainty_msg) == (None, None)
    assert (processed.uncertainty_samples, processed.uncertain_pixels_removed) == (0, 0)
    np.testing.assert_array_equal(processed.depth, make_decoder("fixed_range", near_m=NEAR_M, far_m=FAR_M)(n))


# ---------------------------------------------------------------------------------- the node over DDS


@pytest.mark.parametrize("threshold, encoding", [(0.0, "32FC1"), (0.05, "32FC1"), (0.0, "16UC1")])
def test_published_uncertainty_pairs_with_the_depth_and_the_threshold_removes_exactly_the_uncertain_pixels(
        ros, tiny_checkpoints, threshold, encoding):
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/points", "depth/status", "depth/uncertainty",
                        depth_mode="fixed_range", near_m=NEAR_M, far_m=FAR_M, uncertainty_samples=3,
                        uncertainty_threshold=threshold, output_encoding=encoding)
    node.pipeline = SampledPipeline(node.pipeline)
    assert node.pipeline.samples == 3  # set from the parameter when the node started
    stamp = send_frame(probe, seeded_rgb())
    depth_msg, cloud_msg, status, uncertainty_msg = outputs(probe, stamp, "depth/image", "depth/points",
                                                            "depth/status", "depth/uncertainty")

    assert uncertainty_msg.header == depth_msg.header
    assert (uncertainty_msg.header.frame_id, uncertainty_msg.header.stamp) == (depth_msg.header.frame_id, stamp)
    assert (uncertainty_msg.encoding, uncertainty_msg.width, uncertainty_msg.height) == ("32FC1", WIDTH, HEIGHT)
    uncertainty, depth = pixels(uncertainty_msg), pixels(depth_msg)
    depth_invalid = depth == 0 if encoding == "16UC1" else np.isnan(depth)
    np.testing.assert_array_equal(np.isnan(uncertainty), depth_invalid)

    expected_depth, expected_uncertainty, removed = expected_by_hand(fixed_samples(3), threshold)
    if encoding == "16UC1":
        assert depth_invalid[8:12, 0:4].all() and np.isfinite(expected_depth[8:12, 0:4]).all()  # > 65.535 m
        expected_uncertainty[8:12, 0:4] = np.nan
    else:
        np.testing.assert_allclose(depth, expected_depth, rtol=1e-6)
        np.testing.assert_array_equal(np.isnan(cloud_z(cloud_msg)), np.isnan(expected_depth))
    np.testing.assert_allclose(uncertainty, expected_uncertainty, rtol=1e-5, atol=1e-4)  # float32 std
    assert (status.uncertainty_samples, status.uncertainty_filter) == (3, threshold > 0)
    assert status.uncertain_pixels_removed == removed.sum()
    if threshold:
        assert removed.sum() > 100 and np.isnan(depth[removed]).all() and not np.isinf(uncertainty).any()
    else:
        assert np.isinf(uncertainty[4:8, 0:4]).all()  # one sample decodes invalid, the mean does not


def test_without_samples_nothing_is_published_on_uncertainty_and_a_run_time_change_applies_at_the_next_frame(
        ros, tiny_checkpoints):
    """The real tiny model: with uncertainty_samples 1 no uncertainty and status 0/false; after a change to
    3 the next frame's uncertainty is the spread of the model's own 3 samples (fixed seed: recomputed here)."""
    node, probe = start(ros, tiny_checkpoints, "depth/image", "depth/status", "depth/uncertainty", "/diagnostics",
                        uncertainty_threshold=0.5)
    rgb = seeded_rgb()
    stamp = send_frame(probe, rgb)
    (status,) = outputs(probe, stamp, "depth/status")
    assert (status.uncertainty_samples, status.uncertainty_filter, status.uncertain_pixels_removed) == (0, False, 0)

    assert node.set_parameters([Parameter("uncertainty_samples", value=3)])[0].successful
    stamp = send_frame(probe, rgb)
    depth_msg, status, uncertainty_msg = outputs(probe, stamp, "depth/image", "depth/status", "depth/uncertainty")
    assert probe.count("depth/uncertainty") == 1  # none for the frame before the change
    assert (status.uncertainty_samples, status.uncertainty_filter) == (3, True)
    assert node.pipeline.samples == 3
    prediction = node.pipeline(rgb)  # seed 0: the same samples again
    assert prediction.samples.shape == (3, HEIGHT, WIDTH)
    decoder = make_decoder("relative")
    spread, depth = sample_spread(decoder, prediction.samples), decoder(prediction.depth)
    removed = uncertain_mask(spread, depth, 0.5)
    depth[removed] = np.nan
    assert status.uncertain_pixels_removed == removed.sum()
    np.testing.assert_allclose(pixels(depth_msg), depth, rtol=1e-5)
    np.testing.assert_allclose(pixels(uncertainty_msg), published_uncertainty(spread, depth, False), rtol=1e-4,
                               atol=1e-7)
    assert uncertainty_msg.header == depth_msg.header

    def reports(samples: str):
        return any(kv.key == "uncertainty_samples" and kv.value == samples
                   for msg in probe.messages("/diagnostics") for status in msg.status for kv in status.values)
    wait_for(lambda: reports("3"), 10.0, "/diagnostics with uncertainty_samples 3")

    assert node.set_parameters([Parameter("uncertainty_samples", value=1)])[0].successful
    stamp = send_frame(probe, rgb)
    (status,) = outputs(probe, stamp, "depth/status")
    assert (status.uncertainty_samples, status.uncertainty_filter, status.uncertain_pixels_removed) == (0, False, 0)
    assert probe.count("depth/uncertainty") == 1


def test_a_lazy_node_infers_for_a_subscriber_of_depth_uncertainty_alone(ros, tiny_checkpoints):
    node, probe = start(ros, tiny_checkpoints, "depth/uncertainty", uncertainty_samples=2)  # lazy by default
    assert node._pub_depth.get_subscription_count() == 0
    stamp = send_frame(probe, seeded_rgb())
    (uncertainty_msg,) = outputs(probe, stamp, "depth/uncertainty")
    assert (uncertainty_msg.header.stamp, uncertainty_msg.header.frame_id) == (stamp, "camera_optical_frame")
    assert (uncertainty_msg.width, uncertainty_msg.height) == (WIDTH, HEIGHT)
    assert np.isfinite(pixels(uncertainty_msg)).all()


# ---------------------------------------------------------------------------------------- parameters


def test_uncertainty_parameters_are_checked(ros, tiny_checkpoints):
    node = ros.depth_node(tiny_checkpoints)
    refused = {("uncertainty_samples", 0): "uncertainty_samples", ("uncertainty_samples", 17): "uncertainty_samples",
               ("uncertainty_threshold", -0.1): "uncertainty_threshold",
               ("uncertainty_threshold", 10.5): "uncertainty_threshold"}
    for (name, value), reason in refused.items():
        (result,) = node.set_parameters([Parameter(name, value=value)])
        assert not result.successful and reason in result.reason, (name, value, result.reason)
    for name, value in (("uncertainty_samples", 16), ("uncertainty_threshold", 0.2), ("uncertainty_samples", 1)):
        assert node.set_parameters([Parameter(name, value=value)])[0].successful, (name, value)
    with pytest.raises(InvalidParameterValueException, match="uncertainty_samples out of range"):
        ros.depth_node(tiny_checkpoints, uncertainty_samples=17)
    assert check_settings(NodeSettings(uncertainty_samples=16, uncertainty_threshold=10.0)) is None


def test_video_mode_refuses_several_samples_with_the_reason(ros, tmp_path):
    reason = "uncertainty_samples 2 is not available in video mode"
    assert reason in check_settings(NodeSettings(mode="video", uncertainty_samples=2))
    assert "one initial noise" in check_settings(NodeSettings(mode="video", uncertainty_samples=2))
    ppvd, pi3 = write_video_checkpoints(tmp_path)

    def video_node(**parameters) -> DepthNode:
        params = {"mode": "video", "checkpoint": str(ppvd), "semantics": str(pi3), "steps": 1, **parameters}
        return ros.add(DepthNode(context=ros.context,
                                 parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
    with pytest.raises(ValueError, match=reason):
        video_node(uncertainty_samples=2)
    node = video_node()
    (result,) = node.set_parameters([Parameter("uncertainty_samples", value=2)])
    assert not result.successful and reason in result.reason, result.reason
    assert node.set_parameters([Parameter("uncertainty_threshold", value=0.1)])[0].successful  # no effect, allowed


# ------------------------------------------------------------------------------------------ ppd-bag-eval


def test_bag_eval_reports_the_uncertainty_metrics_with_several_samples(tmp_path, capsys):
    import json

    from ros_harness import bag_messages

    from pixel_perfect_ros.ros.synthetic_bag import synthetic_camera_bag
    from pixel_perfect_ros.tools import bag_eval

    bag = synthetic_camera_bag(tmp_path / "room", 3, HEIGHT, WIDTH, seed=3)
    out = tmp_path / "out"
    topics = ["--image-topic", "/camera/image", "--camera-info-topic", "/camera/camera_info",
              "--depth-topic", "/camera/depth_gt"]
    assert bag_eval.main([str(bag), "--out", str(out), *topics, "-p", "uncertainty_samples:=3",
                          "-p", "uncertainty_threshold:=0.2"]) == 0
    result = json.loads((out / "room" / "metrics.json").read_text())
    metrics = result["summary"]["metrics"]
    for key in ("uncertainty.ause_m", "uncertainty.ause_random_m", "uncertainty.spearman"):
        assert metrics[key]["count"] == 3, key
        assert all(math.isfinite(frame[key]) for frame in result["frames"]), key
    assert all(frame["uncertainty.ause_m"] >= 0 for frame in result["frames"])
    assert -1 <= metrics["uncertainty.spearman"]["mean"] <= 1
    assert result["notes"]["uncertainty"].startswith("3 samples per frame, threshold 0.2: ")
    recorded = bag_messages(out / "room" / "depth_bag")
    assert len(recorded["/depth/uncertainty"]) == 3
    assert "uncertainty AUSE, random order (m)" in (out / "room" / "report.html").read_text()
    assert "uncertainty AUSE (m)" in capsys.readouterr().out


def test_evaluation_ause_is_zero_for_an_uncertainty_that_ranks_the_errors_and_not_for_a_random_one():
    from pixel_perfect_ros.evaluation.sequence import Evaluation

    rng = np.random.default_rng(1)
    gt = rng.uniform(1.0, 5.0, (HEIGHT, WIDTH)).astype(np.float32)
    error = rng.uniform(0.0, 0.5, (HEIGHT, WIDTH)).astype(np.float32)
    depth = gt + error
    K = np.array([[50.0, 0.0, WIDTH / 2], [0.0, 50.0, HEIGHT / 2], [0.0, 0.0, 1.0]])
    evaluation = Evaluation("t")
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    perfect = evaluation.add(0, rgb, gt, K, depth, True, uncertainty=error.copy())
    assert perfect["uncertainty.ause_m"] == pytest.approx(0.0, abs=1e-6)
    assert perfect["uncertainty.spearman"] == pytest.approx(1.0)
    assert perfect["uncertainty.ause_random_m"] > 0.05
    unc = error.copy()
    unc[:4, :4] = np.inf  # samples disagreeing: ranked first, not dropped
    unc[4:8, :4] = np.nan  # no depth there: left out
    assert evaluation.add(1, rgb, gt, K, depth, True, uncertainty=unc)["uncertainty.ause_m"] > 0
    assert "uncertainty.ause_m" not in evaluation.add(2, rgb, gt, K, depth, True)
