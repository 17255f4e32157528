"""The parameters of ``depth_node``: one table that declares, documents and validates them.

``NodeSettings`` is the table: a frozen dataclass whose fields are the parameters (name, type, default)
with their description, choices or range and read-only flag; the node and ppd-bag-eval read typed values
from it (``settings.depth_mode``), and ``PARAMETERS`` (ROS descriptors, config/depth.yaml, the table of
docs/node.md) is derived from it.
Read-only parameters (model, device, QoS, input topic kind) are fixed at start; the others may be
changed while the node runs (``ros2 param set``) and are validated before they take effect.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..geometry.decoding import DECODERS
from ..inference.backends import BACKENDS, BackendOptions
from ..inference.backends.profiles import derived_options
from ..inference.checkpoints import SEMANTICS_TYPES
from ..inference.loader import LoadedModel, ModelRequest, load_model
from ..inference.pipeline import MAX_SAMPLES
from ..inference.sampling import DTYPES
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
            descriptor.integer_range = [IntegerRange(from_value=int(self.limits[0]), to_value=int(self.limits[1]),
                                                     step=1)]
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


def parameter(default: Any, description: str, choices: tuple[str, ...] = (), limits: tuple[float, float] | None = None,
              read_only: bool = False) -> Any:
    """A ``NodeSettings`` field: the parameter's default and its ``ParameterSpec`` attributes."""
    return dataclasses.field(default=default, metadata={"spec": dict(description=description, choices=choices,
                                                                     limits=limits, read_only=read_only)})


@dataclass(frozen=True)
class NodeSettings:
    """Every parameter of depth_node, in documentation order: its name, type (of the default), default,
    description, choices or range, and whether it is read-only. ``PARAMETERS`` is derived from it."""

    # Model (read-only: restart the node to change)
    checkpoint: str = parameter("", "PPD checkpoint: official ppd.pth (DA2 semantics) or ppd_moge.pth (MoGe-2); "
        "video mode: the official ppvd.pth. Empty (with semantics empty): the bundled tiny synthetic-world "
        "model of the mode (image: at target_area 12288), for synthetic rooms only", read_only=True)
    semantics: str = parameter("", "semantics encoder checkpoint: depth_anything_v2_vitl.pth or MoGe-2 model.pt; "
        "video mode: Pi3 model.safetensors. Empty with checkpoint empty: the bundled model's", read_only=True)
    semantics_type: str = parameter("da2", "which encoder 'semantics' is (image mode)", choices=SEMANTICS_TYPES,
        read_only=True)
    mode: str = parameter("image", "image: every frame on its own (PPD); video: a stream with temporally consistent "
        "depth (PPVD streaming, see the video_* parameters; checkpoint ppvd.pth and semantics Pi3's "
        "model.safetensors, or both empty for the bundled tiny video model; depth_mode moge2, "
        "intrinsics_source moge2 and output_resolution processing are not available)", choices=MODES, read_only=True)
    device: str = parameter("cpu", "torch device: cpu, cuda, cuda:1, ... (never changed silently)", read_only=True)
    dtype: str = parameter("fp32", "inference precision", choices=tuple(DTYPES), read_only=True)
    torch_threads: int = parameter(1, "CPU threads of torch's intra-op pool (torch.set_num_threads); 0: torch's "
        "default (one per core). 1 is measured fastest on a loaded machine (see docs/node.md)", limits=(0, 1024),
        read_only=True)
    backend: str = parameter("auto", "what runs the image model: auto (torch_cuda_graph on CUDA, torch on CPU), "
        "torch (eager PyTorch), torch_cuda_graph (the sampling loop replayed from CUDA graphs, one per "
        "input size), onnxruntime or tensorrt (graphs and engines in engine_file_path). A backend that "
        "cannot start here falls back to torch with a logged warning; depth/status and /diagnostics "
        "report the one running. Video mode runs torch only (auto or torch)",
        choices=("auto", *BACKENDS), read_only=True)
    engine_file_path: str = parameter("", "folder of the exported ONNX graphs and built TensorRT engines "
        "(onnxruntime, tensorrt); empty: ~/.cache/pixel_perfect_ros", read_only=True)
    force_engine_update: bool = parameter(False, "export the ONNX graphs and build the engines again even when "
        "cached ones match (onnxruntime, tensorrt)", read_only=True)
    max_processing_height: int = parameter(0, "largest processing height the compiled backends' shape range "
        "covers, pixels, a multiple of 16; 0: derived from target_area, covering 4:3 and 16:9 cameras in both "
        "orientations (1184 at the default area). A frame outside the range rebuilds the engines for its "
        "size (logged); a failed rebuild falls back to torch", limits=(0, 4096), read_only=True)
    max_processing_width: int = parameter(0, "largest processing width the compiled backends' shape range "
        "covers, pixels, a multiple of 16; 0: derived as max_processing_height", limits=(0, 4096), read_only=True)
    # Inference
    steps: int = parameter(4, "Euler steps of the flow sampler (official: 4)", limits=(1, 100))
    target_area: int = parameter(1024 * 768, "image mode: processing area in pixels (official: 786432 = 1024x768); "
        "each side is rounded to a multiple of 16 (video mode: the video DiT's square input size)",
        limits=(256, 4096 * 4096))
    seed: int = parameter(0, "initial-noise seed, the same for every frame; -1 draws fresh noise per frame (video "
        "mode: one noise for the stream, fixed at start)", limits=(-1, 2**31 - 1))
    uncertainty_samples: int = parameter(1, "image mode: diffusion samples per frame, each from its own initial "
        "noise, run as one batch (N DiT frame-passes per Euler step, one semantics pass); the depth is their mean "
        "in normalised log-depth and depth/uncertainty the standard deviation of their decoded depth (metres in "
        "metric depth modes, divided by the depth in relative mode). 1 = off: one sample, nothing on "
        "depth/uncertainty. Video mode: 1 only (the stream keeps one initial noise; N samples per frame would "
        "need N streams)", limits=(1, MAX_SAMPLES))
    # Video mode (read-only)
    video_streaming: str = parameter("stream_exact", "video mode: stream_exact (the cached references run again in "
        "every window) or stream_cached (the references are sampled once per reference set and "
        "their tokens reused: about 1.4 instead of 4 DiT frame-passes per frame at K=1, an "
        "approximation: the references do not see the new frames)", choices=VIDEO_STREAMING_MODES,
        read_only=True)
    video_frames_per_window: int = parameter(1, "video mode: K new frames per window once the cache is ready; the K "
        "frames are published together when the K-th arrives", limits=(1, 13), read_only=True)
    video_keyframe_every: int = parameter(8, "video mode: every N-th frame since the anchor becomes a reference "
        "keyframe", limits=(1, 100_000), read_only=True)
    video_max_scale_jump: float = parameter(0.5, "video mode: re-anchor the stream (scene cut, tracking loss) when a "
        "window's fitted scale is <= 0 or differs from 1 by more than this", limits=(0.01, 1000.0),
        read_only=True)
    # Depth output
    depth_mode: str = parameter("relative", "depth decoding: relative (exp of the normalised log-depth, not metres), "
        "fixed_range (metres, assuming the scene spans near_m..far_m), moge2 (metres aligned to MoGe-2's "
        "metric prediction of each frame) or sparse_topic (metres aligned to the depth image on "
        "sparse_depth)", choices=tuple(DECODERS))
    near_m: float = parameter(0.5, "fixed_range: depth of the scene's near end (2nd percentile), metres",
        limits=(0.0, 1000.0))
    far_m: float = parameter(10.0, "fixed_range: depth of the scene's far end (98th percentile), metres",
        limits=(0.0, 10000.0))
    moge2_checkpoint: str = parameter("", "MoGe-2 model.pt for depth_mode moge2; empty: the 'semantics' file when "
        "semantics_type is moge2 (one shared encoder pass), else moge2 is unavailable", read_only=True)
    moge2_min_points: int = parameter(100, "moge2: valid MoGe-2 pixels needed to fit a frame (else the last fit is "
        "held)", limits=(2, 100_000_000))
    sparse_min_points: int = parameter(50, "sparse_topic: valid sensor pixels needed to fit a frame (else the last "
        "fit is held)", limits=(2, 100_000_000))
    sparse_smoothing: float = parameter(0.8, "sparse_topic: weight of the previous fit in the running average",
        limits=(0.0, 0.99))
    sparse_max_jump: float = parameter(0.3, "sparse_topic: a new fit that changes the depth at the median pixel by "
        "more than this fraction is rejected as an outlier (5 in a row: accepted as a scene change)",
        limits=(0.01, 10.0))
    sparse_max_age_s: float = parameter(0.2, "sparse_topic: largest stamp difference between the image and the "
        "sensor depth used for it, seconds", limits=(0.0, 10.0))
    flying_pixel_threshold: float = parameter(0.0, "edge filter: a pixel between a nearer and a farther neighbour, "
        "each differing by more than this fraction of its depth, is invalid (NaN); 0 = off", limits=(0.0, 1.0))
    uncertainty_threshold: float = parameter(0.0, "uncertainty filter: a pixel whose relative spread over the "
        "samples (standard deviation of the decoded depth / the depth) is above this is invalid (NaN) in "
        "depth/image, depth/points and depth/uncertainty; 0 = off. Applies only with uncertainty_samples >= 2 "
        "(no effect with 1)", limits=(0.0, 10.0))
    output_resolution: str = parameter("input", "depth size: input (camera image size) or processing (network size)",
        choices=("input", "processing"))
    output_encoding: str = parameter("32FC1", "depth/image encoding: 32FC1 (NaN = invalid) or 16UC1 (mm, 0 = invalid)",
        choices=("32FC1", "16UC1"))
    publish_points: bool = parameter(True, "publish the organized point cloud depth/points")
    points_xyzrgb: bool = parameter(False, "add the packed rgb field to depth/points")
    points_decimation: int = parameter(1, "keep every n-th pixel (both axes) in depth/points", limits=(1, 16))
    # Input
    max_input_pixels: int = parameter(16_000_000, "largest input image accepted, width x height pixels (read from a "
        "compressed image's header before decoding); larger frames are refused and counted as rejected",
        limits=(1, 2**31 - 1))
    use_compressed: bool = parameter(False, "subscribe image/compressed (jpeg/png) instead of image", read_only=True)
    intrinsics_source: str = parameter("camera_info", "camera_info: intrinsics from the camera_info topic (paired with "
        "each image); moge2: estimated by MoGe-2 for every frame (uncalibrated cameras: no camera_info "
        "needed; needs the MoGe-2 model, see moge2_checkpoint)", choices=("camera_info", "moge2"))
    pairing: str = parameter("stamp", "CameraInfo pairing: stamp (same stamp within the tolerance) or latest "
        "(latest CameraInfo of the same frame_id)", choices=("stamp", "latest"))
    pairing_tolerance_s: float = parameter(0.005, "stamp pairing tolerance, seconds", limits=(0.0, 1.0))
    lazy: bool = parameter(True, "run inference only while an output topic has a subscriber")
    # QoS (read-only)
    input_reliability: str = parameter("best_effort", "QoS reliability of the image, camera_info and sparse_depth "
        "subscriptions (best_effort matches both kinds of publisher)", choices=RELIABILITY, read_only=True)
    input_depth: int = parameter(5, "QoS history depth of the input subscriptions", limits=(1, 100), read_only=True)
    output_reliability: str = parameter("reliable", "QoS reliability of the outputs (reliable is seen by both "
        "reliable subscribers such as RViz's defaults and best_effort ones)", choices=RELIABILITY,
        read_only=True)
    output_depth: int = parameter(2, "QoS history depth of the outputs", limits=(1, 100), read_only=True)

    def replace(self, **changes: Any) -> "NodeSettings":
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


PARAMETERS: tuple[ParameterSpec, ...] = tuple(
    ParameterSpec(name=f.name, default=f.default, **f.metadata["spec"]) for f in dataclasses.fields(NodeSettings))
"""Every parameter of depth_node, in documentation order."""

SPECS = {spec.name: spec for spec in PARAMETERS}


def check_settings(settings: NodeSettings) -> str | None:
    """The reason a complete set of parameter values is not acceptable, or None.

    Checks each value against its spec, then the constraints between values.
    """
    for spec in PARAMETERS:
        reason = spec.check(getattr(settings, spec.name))
        if reason:
            return reason
    for name in ("max_processing_height", "max_processing_width"):
        value = getattr(settings, name)
        if value % 16 or 0 < value < 32:
            return f"{name} must be 0 (derived) or a multiple of 16 from 32 up; got {value}"
    if settings.mode == "video":
        if settings.backend not in ("auto", "torch"):
            return (f"backend {settings.backend} is not available in video mode (PPVD runs in torch only: "
                    "set backend auto or torch)")
        for name, value in VIDEO_UNAVAILABLE.items():
            if getattr(settings, name) == value:
                return (f"{name} {value} is not available in video mode (PPVD has no MoGe-2 and works at its own "
                        "square network size)")
        if settings.uncertainty_samples > 1:
            return (f"uncertainty_samples {settings.uncertainty_samples} is not available in video mode (the PPVD "
                    "stream keeps one initial noise for the whole stream, so several samples per frame would need "
                    "as many streams): set uncertainty_samples 1")
    if settings.depth_mode == "fixed_range" and not settings.near_m < settings.far_m:
        return f"fixed_range needs near_m < far_m; got near_m={settings.near_m}, far_m={settings.far_m}"
    return None


def model_request(settings: NodeSettings) -> ModelRequest:
    """What ``inference.loader.load_model`` loads for the node's settings (target_area at its default: the
    model's own area, so the bundled model runs at the area it was trained at)."""
    return ModelRequest(
        checkpoint=settings.checkpoint, semantics=settings.semantics, semantics_type=settings.semantics_type,
        metric_checkpoint=settings.moge2_checkpoint, video=settings.mode == "video", device=settings.device,
        dtype=settings.dtype, steps=settings.steps, seed=None if settings.seed < 0 else settings.seed,
        target_area=None if settings.target_area == SPECS["target_area"].default else settings.target_area,
        backend=settings.backend, backend_options=backend_options(settings))


def backend_options(settings: NodeSettings) -> BackendOptions:
    """The compiled backends' settings (``profiles.derived_options``: the shape range from target_area, or
    max_processing_height / width where set)."""
    return derived_options(settings.target_area, settings.max_processing_height, settings.max_processing_width,
                           engine_file_path=settings.engine_file_path,
                           force_engine_update=settings.force_engine_update)


def load_node_model(settings: NodeSettings, log: Callable[[str], None] | None = None
                    ) -> tuple[LoadedModel, NodeSettings]:
    """The model of the node's settings (``inference.loader.load_model``; ``log`` receives the backend's
    rebuild and fallback lines) and the settings it runs with: ``target_area`` the bundled model's own
    when it was left at its default.

    Raises:
        CheckpointError, ValueError: as ``load_model``.
    """
    loaded = load_model(model_request(settings), log=log)
    if loaded.request.target_area not in (None, settings.target_area):
        settings = settings.replace(target_area=loaded.request.target_area)
    return loaded, settings
