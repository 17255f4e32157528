"""The parameters of ``depth_node``: one table that declares, documents and validates them.

Read-only parameters (model, device, QoS, input topic kind) are fixed at start; the others may be
changed while the node runs (``ros2 param set``) and are validated before they take effect.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..geometry.decoding import DECODERS
from ..inference.backends import BACKENDS
from ..inference.checkpoints import SEMANTICS_TYPES
from ..inference.pipeline import DTYPES
from ..inference.video_stream import MODES as VIDEO_STREAMING_MODES


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter: name, default (its type is the parameter's type), documentation, limits."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    limits: tuple[float, float] | None = None
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.limits and isinstance(self.default, bool):
            raise TypeError(f"{self.name}: a bool parameter has no range")
        if self.limits and isinstance(self.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(self.limits[0]), to_value=int(self.limits[1]), step=1)]
        elif self.limits:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(self.limits[0]),
                                                                  to_value=float(self.limits[1]), step=0.0)]
        return descriptor

    def check(self, value: Any) -> str | None:
        """The reason ``value`` is not acceptable, or None. (Ranges are also enforced by rclpy.)"""
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        if self.limits and not self.limits[0] <= value <= self.limits[1]:
            return f"{self.name} must be in [{self.limits[0]}, {self.limits[1]}]; got {value!r}"
        return None


RELIABILITY = ("reliable", "best_effort")
MODES = ("image", "video")
VIDEO_UNAVAILABLE = {"depth_mode": "moge2", "intrinsics_source": "moge2", "output_resolution": "processing"}
"""Values that video mode cannot serve: PPVD has no MoGe-2 and its network size is square, not the image's."""

PARAMETERS: tuple[ParameterSpec, ...] = (
    # Model (read-only: restart the node to change)
    ParameterSpec("checkpoint", "", "PPD checkpoint: official ppd.pth (DA2 semantics) or ppd_moge.pth (MoGe-2); "
                  "empty (with semantics empty): the bundled tiny synthetic-world model at target_area 12288; "
                  "video mode: the official ppvd.pth", read_only=True),
    ParameterSpec("semantics", "", "semantics encoder checkpoint: depth_anything_v2_vitl.pth or MoGe-2 model.pt; "
                  "video mode: Pi3 model.safetensors", read_only=True),
    ParameterSpec("semantics_type", "da2", "which encoder 'semantics' is (image mode)", choices=SEMANTICS_TYPES,
                  read_only=True),
    ParameterSpec("mode", "image", "image: every frame on its own (PPD); video: a stream with temporally consistent "
                  "depth (PPVD streaming, see the video_* parameters; checkpoint ppvd.pth and semantics Pi3's "
                  "model.safetensors, both required; depth_mode moge2, intrinsics_source moge2 and "
                  "output_resolution processing are not available)", choices=MODES, read_only=True),
    ParameterSpec("device", "cpu", "torch device: cpu, cuda, cuda:1, ... (never changed silently)", read_only=True),
    ParameterSpec("dtype", "fp32", "inference precision", choices=tuple(DTYPES), read_only=True),
    ParameterSpec("backend", "auto", "what runs the image model: auto (torch_cuda_graph on CUDA, torch on CPU), "
                  "torch (eager PyTorch), torch_cuda_graph (the sampling loop replayed from CUDA graphs, one per "
                  "input size), onnxruntime or tensorrt (graphs and engines in engine_file_path). A backend that "
                  "cannot start here falls back to torch with a logged warning; depth/status and /diagnostics "
                  "report the one running. Video mode runs torch only (auto or torch)",
                  choices=("auto", *BACKENDS), read_only=True),
    ParameterSpec("engine_file_path", "", "folder of the exported ONNX graphs and built TensorRT engines "
                  "(onnxruntime, tensorrt); empty: ~/.cache/pixel_perfect_ros", read_only=True),
    ParameterSpec("force_engine_update", False, "export the ONNX graphs and build the engines again even when "
                  "cached ones match (onnxruntime, tensorrt)", read_only=True),
    ParameterSpec("max_processing_height", 768, "largest processing height the compiled backends' dynamic shapes "
                  "cover, pixels, a multiple of 16 (the processing size comes from target_area and the image's "
                  "aspect ratio)", limits=(16, 4096), read_only=True),
    ParameterSpec("max_processing_width", 1024, "largest processing width the compiled backends' dynamic shapes "
                  "cover, pixels, a multiple of 16", limits=(16, 4096), read_only=True),
    # Inference
    ParameterSpec("steps", 4, "Euler steps of the flow sampler (official: 4)", limits=(1, 100)),
    ParameterSpec("target_area", 1024 * 768, "image mode: processing area in pixels (official: 786432 = 1024x768); "
                  "each side is rounded to a multiple of 16 (video mode: the video DiT's square input size)",
                  limits=(256, 4096 * 4096)),
    ParameterSpec("seed", 0, "initial-noise seed, the same for every frame; -1 draws fresh noise per frame (video "
                  "mode: one noise for the stream, fixed at start)", limits=(-1, 2**31 - 1)),
    # Video mode (read-only)
    ParameterSpec("video_streaming", "stream_exact", "video mode: stream_exact (the cached references run again in "
                  "every window) or stream_cached (the references are sampled once per reference set and "
                  "their tokens reused: about 1.4 instead of 4 DiT frame-passes per frame at K=1, an "
                  "approximation: the references do not see the new frames)", choices=VIDEO_STREAMING_MODES,
                  read_only=True),
    ParameterSpec("video_frames_per_window", 1, "video mode: K new frames per window once the cache is ready; the K "
                  "frames are published together when the K-th arrives", limits=(1, 13), read_only=True),
    ParameterSpec("video_keyframe_every", 8, "video mode: every N-th frame since the anchor becomes a reference "
                  "keyframe", limits=(1, 100_000), read_only=True),
    ParameterSpec("video_max_scale_jump", 0.5, "video mode: re-anchor the stream (scene cut, tracking loss) when a "
                  "window's fitted scale is <= 0 or differs from 1 by more than this", limits=(0.01, 1000.0),
                  read_only=True),
    # Depth output
    ParameterSpec("depth_mode", "relative", "depth decoding: relative (exp of the normalised log-depth, not metres), "
                  "fixed_range (metres, assuming the scene spans near_m..far_m), moge2 (metres aligned to MoGe-2's "
                  "metric prediction of each frame) or sparse_topic (metres aligned to the depth image on "
                  "sparse_depth)", choices=tuple(DECODERS)),
    ParameterSpec("near_m", 0.5, "fixed_range: depth of the scene's near end (2nd percentile), metres",
                  limits=(0.0, 1000.0)),
    ParameterSpec("far_m", 10.0, "fixed_range: depth of the scene's far end (98th percentile), metres",
                  limits=(0.0, 10000.0)),
    ParameterSpec("moge2_checkpoint", "", "MoGe-2 model.pt for depth_mode moge2; empty: the 'semantics' file when "
                  "semantics_type is moge2 (one shared encoder pass), else moge2 is unavailable", read_only=True),
    ParameterSpec("moge2_min_points", 100, "moge2: valid MoGe-2 pixels needed to fit a frame (else the last fit is "
                  "held)", limits=(2, 100_000_000)),
    ParameterSpec("sparse_min_points", 50, "sparse_topic: valid sensor pixels needed to fit a frame (else the last "
                  "fit is held)", limits=(2, 100_000_000)),
    ParameterSpec("sparse_smoothing", 0.8, "sparse_topic: weight of the previous fit in the running average",
                  limits=(0.0, 0.99)),
    ParameterSpec("sparse_max_jump", 0.3, "sparse_topic: a new fit that changes the depth at the median pixel by more "
                  "than this fraction is rejected as an outlier (5 in a row: accepted as a scene change)",
                  limits=(0.01, 10.0)),
    ParameterSpec("sparse_max_age_s", 0.2, "sparse_topic: largest stamp difference between the image and the sensor "
                  "depth used for it, seconds", limits=(0.0, 10.0)),
    ParameterSpec("flying_pixel_threshold", 0.0, "edge filter: a pixel between a nearer and a farther neighbour, each "
                  "differing by more than this fraction of its depth, is invalid (NaN); 0 = off", limits=(0.0, 1.0)),
    ParameterSpec("output_resolution", "input", "depth size: input (camera image size) or processing (network size)",
                  choices=("input", "processing")),
    ParameterSpec("output_encoding", "32FC1", "depth/image encoding: 32FC1 (NaN = invalid) or 16UC1 (mm, 0 = invalid)",
                  choices=("32FC1", "16UC1")),
    ParameterSpec("publish_points", True, "publish the organized point cloud depth/points"),
    ParameterSpec("points_xyzrgb", False, "add the packed rgb field to depth/points"),
    ParameterSpec("points_decimation", 1, "keep every n-th pixel (both axes) in depth/points", limits=(1, 16)),
    # Input
    ParameterSpec("use_compressed", False, "subscribe image/compressed (jpeg/png) instead of image", read_only=True),
    ParameterSpec("intrinsics_source", "camera_info", "camera_info: intrinsics from the camera_info topic (paired with "
                  "each image); moge2: estimated by MoGe-2 for every frame (uncalibrated cameras: no camera_info "
                  "needed; needs the MoGe-2 model, see moge2_checkpoint)", choices=("camera_info", "moge2")),
    ParameterSpec("pairing", "stamp", "CameraInfo pairing: stamp (same stamp within the tolerance) or latest "
                  "(latest CameraInfo of the same frame_id)", choices=("stamp", "latest")),
    ParameterSpec("pairing_tolerance_s", 0.005, "stamp pairing tolerance, seconds", limits=(0.0, 1.0)),
    ParameterSpec("lazy", True, "run inference only while an output topic has a subscriber"),
    # QoS (read-only)
    ParameterSpec("input_reliability", "best_effort", "QoS reliability of the image, camera_info and sparse_depth subscriptions "
                  "(best_effort matches both kinds of publisher)", choices=RELIABILITY, read_only=True),
    ParameterSpec("input_depth", 5, "QoS history depth of the input subscriptions", limits=(1, 100), read_only=True),
    ParameterSpec("output_reliability", "reliable", "QoS reliability of the outputs (reliable is seen by both "
                  "reliable subscribers such as RViz's defaults and best_effort ones)", choices=RELIABILITY,
                  read_only=True),
    ParameterSpec("output_depth", 2, "QoS history depth of the outputs", limits=(1, 100), read_only=True),
)
"""Every parameter of depth_node, in documentation order."""

SPECS = {spec.name: spec for spec in PARAMETERS}


def check_parameters(values: dict[str, Any]) -> str | None:
    """The reason a complete set of parameter values is not acceptable, or None.

    Checks each value against its spec, then the constraints between values.
    """
    for name, value in values.items():
        reason = SPECS[name].check(value)
        if reason:
            return reason
    for name in ("max_processing_height", "max_processing_width"):
        if values[name] % 16:
            return f"{name} must be a multiple of 16; got {values[name]}"
    if values["mode"] == "video":
        if values["backend"] not in ("auto", "torch"):
            return (f"backend {values['backend']} is not available in video mode (PPVD runs in torch only: "
                    "set backend auto or torch)")
        for name, value in VIDEO_UNAVAILABLE.items():
            if values[name] == value:
                return (f"{name} {value} is not available in video mode (PPVD has no MoGe-2 and works at its own "
                        "square network size)")
    if values["depth_mode"] == "fixed_range" and not values["near_m"] < values["far_m"]:
        return f"fixed_range needs near_m < far_m; got near_m={values['near_m']}, far_m={values['far_m']}"
    return None
