"""depth_node's backend parameter over real rclpy and DDS: auto resolves per device, a backend that cannot
start (torch_cuda_graph without CUDA) falls back to torch with a logged reason, and depth/status and
/diagnostics report the backend running, the one requested and the reason."""
from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from checkpoint_files import write_video_checkpoints
from rclpy.parameter import Parameter
from ros_harness import camera_info, connect, rgb_image, wait_for

from pixel_perfect_ros.inference.backends import tensorrt_backend
from pixel_perfect_ros.inference.backends.torch_backend import TorchBackend
from pixel_perfect_ros.ros.depth_node import DepthNode
from pixel_perfect_ros.ros.parameters import PARAMETERS, NodeSettings, check_settings

HEIGHT, WIDTH = 48, 64


def run_one_frame(ros, tiny_checkpoints, **parameters):
    """Start the node with ``parameters``, send one frame; (node, its status, its diagnostic values, probe)."""
    node = ros.depth_node(tiny_checkpoints, **parameters)
    probe = ros.probe("depth/image", "depth/status", "/diagnostics", "/rosout")
    connect(probe, node, "depth/image", "depth/status")
    stamp = Time(sec=5)
    rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    probe.send(rgb_image(rgb, stamp), camera_info(WIDTH, HEIGHT, stamp))
    wait_for(lambda: probe.for_stamp("depth/status", stamp) is not None, what="the frame's status")

    def processed_diagnostic():
        for msg in probe.messages("/diagnostics"):
            values = {kv.key: kv.value for kv in msg.status[0].values}
            if values["frames_processed"] == "1":
                return values
        return None

    wait_for(lambda: processed_diagnostic() is not None, what="a diagnostic after the frame")
    return node, probe.for_stamp("depth/status", stamp), processed_diagnostic(), probe


def test_auto_on_cpu_runs_torch_without_fallback(ros, tiny_checkpoints):
    node, status, values, _ = run_one_frame(ros, tiny_checkpoints)
    assert node.get_parameter("backend").value == "auto"
    assert (status.backend, status.backend_fallback) == ("torch", "")
    assert (values["backend"], values["backend_requested"], values["backend_fallback"]) == ("torch", "auto (torch)", "")


def test_an_unavailable_backend_falls_back_to_torch_and_says_why(ros, tiny_checkpoints):
    node, status, values, probe = run_one_frame(ros, tiny_checkpoints, backend="torch_cuda_graph")
    assert status.backend == "torch"
    assert "torch_cuda_graph unavailable" in status.backend_fallback and "CUDA" in status.backend_fallback
    assert (values["backend"], values["backend_requested"], values["backend_fallback"]) == (
        "torch", "torch_cuda_graph", status.backend_fallback)
    wait_for(lambda: status.backend_fallback in probe.logs(), what="the fallback warning on /rosout")
    (result,) = node.set_parameters([Parameter("backend", value="torch")])
    assert not result.successful  # read-only


class FailingEngine(TorchBackend):
    """A tensorrt backend that starts and then fails on every frame (as a lost GPU context would)."""

    name = "tensorrt"
    frames = 0

    def sample(self, image, semantics, noise, timesteps):
        FailingEngine.frames += 1
        raise RuntimeError("TensorRT execute_async_v3 failed")


def test_a_backend_failing_on_a_frame_falls_back_to_torch_once_and_reports_it(ros, tiny_checkpoints, monkeypatch):
    monkeypatch.setattr(tensorrt_backend, "TensorRTBackend", FailingEngine)
    FailingEngine.frames = 0
    node, status, values, probe = run_one_frame(ros, tiny_checkpoints, backend="tensorrt")
    assert status.backend == "torch"  # the failing frame itself was redone in torch and published
    assert status.backend_fallback.startswith("backend tensorrt failed on a frame (RuntimeError: TensorRT "
                                              "execute_async_v3 failed)")
    assert (values["backend"], values["backend_requested"], values["backend_fallback"]) == (
        "torch", "tensorrt", status.backend_fallback)
    wait_for(lambda: status.backend_fallback in probe.logs(), what="the fallback warning on /rosout")
    stamp = Time(sec=6)
    probe.send(rgb_image(np.zeros((HEIGHT, WIDTH, 3), np.uint8), stamp), camera_info(WIDTH, HEIGHT, stamp))
    wait_for(lambda: probe.for_stamp("depth/status", stamp) is not None, what="the second frame's status")
    assert FailingEngine.frames == 1  # never asked again
    assert probe.logs().count(status.backend_fallback) == 1

    def warned() -> bool:
        return any(msg.status[0].level == DiagnosticStatus.WARN and msg.status[0].message ==
                   "running torch, not tensorrt" for msg in probe.messages("/diagnostics"))

    wait_for(warned, what="a WARN diagnostic naming the fallback")


def test_backend_options_are_checked():
    defaults = NodeSettings()
    assert check_settings(defaults) is None
    assert "multiple of 16" in check_settings(defaults.replace(max_processing_width=1000))
    assert "multiple of 16 from 32" in check_settings(defaults.replace(max_processing_height=16))
    assert check_settings(defaults.replace(max_processing_height=0, max_processing_width=512)) is None
    assert "one of: auto" in PARAMETERS[[s.name for s in PARAMETERS].index("backend")].descriptor(
    ).additional_constraints
    assert "not available in video mode" in check_settings(defaults.replace(mode="video", backend="tensorrt"))
    assert check_settings(defaults.replace(mode="video", backend="torch")) is None


def test_video_mode_refuses_a_backend_other_than_torch(ros, tmp_path):
    ppvd, pi3 = write_video_checkpoints(tmp_path)
    overrides = [Parameter(k, value=v) for k, v in {"mode": "video", "checkpoint": str(ppvd), "semantics": str(pi3),
                                                     "backend": "torch_cuda_graph"}.items()]
    with pytest.raises(ValueError, match="backend torch_cuda_graph is not available in video mode"):
        DepthNode(context=ros.context, parameter_overrides=overrides)
