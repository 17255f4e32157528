"""``depth_node``: camera image in; depth image, CameraInfo, organized point cloud and status out.

Topics (relative to the node namespace, remappable):
    in:  ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage), ``camera_info``,
         video mode: ``reset_video`` (std_msgs/Empty)
    out: ``depth/image`` (32FC1 metres or relative units, NaN = invalid; or 16UC1 mm, 0 = invalid),
         ``depth/camera_info`` (K, P scaled to the depth image), ``depth/points`` (organized PointCloud2),
         ``depth/status`` (pixel_perfect_ros/DepthStatus), ``/diagnostics``.
Service (video mode): ``~/reset_video`` (std_srvs/Trigger).
Every output carries the source image's header (stamp and optical frame_id).

Modes: ``image`` runs PPD on every frame on its own. ``video`` pushes every frame into a
``StreamingVideoDepth`` (PPVD) with its stamp through ``processing.VideoFrameProcessor`` (shared with
ppd-bag-eval); each (stamp, depth) it returns, possibly several at once and later than the frame's push,
goes through the same ``FrameProcessor.finish`` as in image mode and is published with that frame's
header. The stream's references are cleared on ``reset_video`` (before the next frame is pushed) and when
a stamp goes back.

Threads: the executor only pairs and hands frames over; inference runs in an ``InferenceWorker``
behind a latest-frame-wins slot, so the executor never blocks and late frames are dropped and counted.
The frame itself is processed by ``processing.FrameProcessor`` (shared with ppd-bag-eval); the node
publishes its messages.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Empty, Header
from std_srvs.srv import Trigger

from ..inference.checkpoints import CheckpointError
from ..inference.pipeline import PixelPerfectDepth
from ..inference.preprocess import processing_size
from ..model.flow import sampling_timesteps
from ..msg import DepthStatus
from .allocator import keep_freed_memory
from .conversions import ConversionError, header_stamp_ns
from .latest_slot import InferenceWorker
from .pairing import CameraInfoPairer
from .parameters import PARAMETERS, SPECS, check_parameters
from .processing import (
    FrameProcessor,
    ProcessedFrame,
    Settings,
    VideoFrameProcessor,
    load_pipeline,
    load_video_stream,
    model_id,
    nearest_by_stamp,
    resolve_backend,
)

CAMERA_INFO_WAIT_WARN_S = 1.0
"""An image waiting this long for its CameraInfo triggers a (throttled) warning."""
SPARSE_BUFFER = 10
"""Recent sparse_depth messages kept to find the one nearest in time to each image."""
VIDEO_FIXED = ("seed", "target_area")
"""Parameters that video mode fixes at start (one initial noise for the stream; the DiT's own input size)."""
STAGES = ("decode_ms", "preprocess_ms", "semantics_ms", "sampling_ms", "postprocess_ms", "publish_ms", "total_ms")


@dataclass(frozen=True)
class Frame:
    """An input frame as handed to the inference worker (with its CameraInfo, or None when the
    intrinsics come from MoGe-2)."""

    image: Image | CompressedImage
    info: CameraInfo | None
    received_s: float  # time.perf_counter() at receipt


def _qos(reliability: str, depth: int) -> QoSProfile:
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy)


class DepthNode(Node):
    """Pixel-Perfect Depth as a ROS 2 node (see the module docstring for topics).

    Raises (from the constructor): ValueError or CheckpointError for bad parameters or model files.
    """

    def __init__(self, **kwargs):
        super().__init__("depth_node", **kwargs)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        values = {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}
        reason = check_parameters(values)
        if reason:
            raise ValueError(reason)
        self._video = values["mode"] == "video"
        self._stream = load_video_stream(values) if self._video else None
        # load_pipeline fills in the bundled model's files and area when unset.
        model = self._stream.model if self._video else load_pipeline(values, self.get_logger())
        self._processor = FrameProcessor(model)
        if self.get_parameter("target_area").value != values["target_area"]:
            self.set_parameters([Parameter("target_area", value=values["target_area"])])
        reason = self._check(values)
        if reason:
            raise ValueError(reason)
        self._settings = Settings.from_values(values)
        self.model_id = model_id(values)
        # The backend asked for (auto resolved), the one running and why they differ ('' when they do not);
        # load_pipeline has warned the reason. Video mode runs torch (check_parameters refuses others).
        resolved = resolve_backend(values)
        self.backend_requested = f"auto ({resolved})" if values["backend"] == "auto" else resolved
        self.backend, self.backend_fallback = ("torch", "") if self._video else (model.backend.name,
                                                                                model.backend_fallback)

        self._lock = threading.Lock()
        self._counts = {"received": 0, "processed": 0, "rejected": 0, "idle": 0}
        self._window = {"processed": 0, "rejected": 0, "failed": 0, "stage_sums": dict.fromkeys(STAGES, 0.0)}
        self._window_start = time.perf_counter()
        # Video mode. Executor side (under _lock): the reset request and the snapshot of the stream's state.
        # Worker side only: the stream with the frames pushed and not yet returned.
        self._reset_request: str | None = None
        self._video_state = {"cache_state": "", "references": 0, "reanchors": 0, "resets": 0, "dropped": 0}
        self._video_processor = (VideoFrameProcessor(self._stream, self._processor, self._on_video_reset)
                                 if self._video else None)
        if self._video:
            self._video_state["cache_state"] = self._stream.cache.state
        self._pairer = self._make_pairer(values)
        self._worker = InferenceWorker(self._process_video if self._video else self._process, self._on_worker_error)

        out_qos = _qos(values["output_reliability"], values["output_depth"])
        self._pub_depth = self.create_publisher(Image, "depth/image", out_qos)
        self._pub_info = self.create_publisher(CameraInfo, "depth/camera_info", out_qos)
        self._pub_points = self.create_publisher(PointCloud2, "depth/points", out_qos)
        self._pub_status = self.create_publisher(DepthStatus, "depth/status", out_qos)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        in_qos = _qos(values["input_reliability"], values["input_depth"])
        if values["use_compressed"]:
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, in_qos)
        else:
            self.create_subscription(Image, "image", self._on_image, in_qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, in_qos)
        self._sparse_depths: deque[Image] = deque(maxlen=SPARSE_BUFFER)  # appended by the executor
        self.create_subscription(Image, "sparse_depth", self._on_sparse_depth, in_qos)
        if self._video:
            self.create_service(Trigger, "~/reset_video", self._on_reset_service)
            self.create_subscription(Empty, "reset_video", self._on_reset_topic, 10)

        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        video = (f"; video {values['video_streaming']}, {values['video_frames_per_window']} frames per window"
                 if self._video else "")
        self.get_logger().info(
            f"model {self.model_id} on {values['device']} ({values['dtype']}, {values['steps']} steps, backend "
            f"{self.backend}); "
            f"depth_mode {values['depth_mode']}; input {'image/compressed' if values['use_compressed'] else 'image'}"
            f"{video}"
        )

    # --- set-up ------------------------------------------------------------------------------------

    @property
    def pipeline(self) -> PixelPerfectDepth:
        """The model the worker runs (the processor's; replaceable between frames in image mode; in video
        mode the stream's ``PixelPerfectVideoDepth``)."""
        return self._processor.pipeline

    @pipeline.setter
    def pipeline(self, pipeline: PixelPerfectDepth) -> None:
        self._processor.pipeline = pipeline

    @staticmethod
    def _make_pairer(values: dict[str, Any]) -> CameraInfoPairer:
        return CameraInfoPairer(tolerance_ns=round(values["pairing_tolerance_s"] * 1e9), mode=values["pairing"])

    @staticmethod
    def _own(params) -> dict[str, Any]:
        """The values of this node's parameters among ``params`` (rclpy's own, e.g. use_sim_time, left out)."""
        return {p.name: p.value for p in params if p.name in SPECS}

    def _check(self, values: dict[str, Any]) -> str | None:
        """``check_parameters`` plus what depends on the loaded models."""
        uses_moge2 = [f"{name} moge2" for name in ("depth_mode", "intrinsics_source") if values[name] == "moge2"]
        if uses_moge2 and not self._video and self.pipeline.metric_model is None:
            return (f"{' and '.join(uses_moge2)} needs the MoGe-2 model: restart with moge2_checkpoint set, or "
                    "with semantics_type moge2")
        return check_parameters(values)

    def _validate_parameters(self, params) -> SetParametersResult:
        own = self._own(params)
        values = {**self._settings.values, **own}
        reason = self._check(values)
        fixed = [name for name in VIDEO_FIXED if name in own and own[name] != self._settings.values[name]]
        if reason is None and self._video and fixed:
            reason = f"{', '.join(fixed)} cannot change in video mode (fixed when the node starts)"
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, params) -> None:
        own = self._own(params)
        if not own:
            return
        values = {**self._settings.values, **own}
        self._settings = Settings.from_values(values)
        if self._video:
            self.pipeline.timesteps = sampling_timesteps(values["steps"])
        else:
            self.pipeline.steps = values["steps"]
            self.pipeline.target_area = values["target_area"]
            self.pipeline.seed = None if values["seed"] < 0 else values["seed"]
        if own.keys() & {"pairing", "pairing_tolerance_s"}:
            # In place: a new pairer would forget the CameraInfos received (a camera may send only one),
            # the waiting image and the drop count.
            self._pairer.reconfigure(values["pairing"], round(values["pairing_tolerance_s"] * 1e9))

    # --- executor side: receive, pair, hand over ---------------------------------------------------

    def _wanted(self) -> bool:
        """Whether any output has a subscriber (or laziness is off)."""
        if not self._settings.values["lazy"]:
            return True
        return any(p.get_subscription_count() > 0 for p in (self._pub_depth, self._pub_info, self._pub_points))

    def _on_image(self, msg: Image | CompressedImage) -> None:
        wanted = self._wanted()
        with self._lock:
            self._counts["received"] += 1
            self._counts["idle"] += not wanted
        if not wanted:
            return
        if self._settings.values["intrinsics_source"] == "moge2":
            self._worker.submit(Frame(image=msg, info=None, received_s=time.perf_counter()))
            return
        pair = self._pairer.add_image(header_stamp_ns(msg.header), msg.header.frame_id, (msg, time.perf_counter()))
        if pair:
            self._submit(pair)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        pair = self._pairer.add_info(header_stamp_ns(msg.header), msg.header.frame_id, msg)
        if pair:
            self._submit(pair)

    def _submit(self, pair) -> None:
        (image, received_s), info = pair
        self._worker.submit(Frame(image=image, info=info, received_s=received_s))

    # --- worker side: infer, decode, publish -------------------------------------------------------

    def _reject(self, frame: Frame, reason: str) -> None:
        with self._lock:
            self._counts["rejected"] += 1
            self._window["rejected"] += 1
        self.get_logger().warning(
            f"dropped frame {header_stamp_ns(frame.image.header)} on '{frame.image.header.frame_id}': {reason}",
            throttle_duration_sec=2.0,
        )

    def _on_worker_error(self, frame: Frame, error: BaseException) -> None:
        if not self.context.ok():  # shut down (e.g. Ctrl-C) while this frame was in flight: not a failure
            return
        with self._lock:
            self._window["failed"] += 1
        self.get_logger().error(f"inference failed on frame {header_stamp_ns(frame.image.header)}: {error!r}",
                                throttle_duration_sec=2.0)

    def _process(self, frame: Frame) -> None:
        settings = self._settings
        values = settings.values
        header = frame.image.header
        sparse = self._sparse_for(header, values) if values["depth_mode"] == "sparse_topic" else None
        want_points = self._pub_points.get_subscription_count() > 0 or not values["lazy"]
        try:
            processed = self._processor.process(frame.image, frame.info, settings, sparse, want_points)
        except ConversionError as error:
            self._reject(frame, str(error))
            return
        self._publish(frame, processed, settings)

    def _publish(self, frame: Frame, processed: ProcessedFrame, settings: Settings) -> None:
        """Publish one processed frame's messages and status, and count it."""
        if processed.nonfinite_pixels:
            self.get_logger().warning(f"{processed.nonfinite_pixels} NaN/inf pixels in a 32FC1 image were read as 0",
                                      throttle_duration_sec=5.0)
        if processed.sparse_error:
            self.get_logger().warning(f"sparse_depth unusable: {processed.sparse_error}", throttle_duration_sec=5.0)
        start = time.perf_counter()
        self._pub_depth.publish(processed.depth_msg)
        self._pub_info.publish(processed.info_msg)
        if processed.points_msg is not None:
            self._pub_points.publish(processed.points_msg)
        published = time.perf_counter()

        stages = {
            **processed.stages_ms,
            "publish_ms": processed.messages_ms + (published - start) * 1e3,
            "total_ms": (published - frame.received_s) * 1e3,
        }
        with self._lock:
            self._counts["processed"] += 1
            self._window["processed"] += 1
            for stage, ms in stages.items():
                self._window["stage_sums"][stage] += ms
        self._pub_status.publish(self._status(processed, settings, stages))

    def _process_video(self, frame: Frame) -> None:
        """Video mode: push the frame into the stream, then publish every frame it returns."""
        settings = self._settings
        values = settings.values
        with self._lock:
            request, self._reset_request = self._reset_request, None
        sparse = self._sparse_for(frame.image.header, values) if values["depth_mode"] == "sparse_topic" else None
        want_points = self._pub_points.get_subscription_count() > 0 or not values["lazy"]

        def publish(source: Frame, processed: ProcessedFrame) -> None:
            self._snapshot_video_state()
            self._publish(source, processed, settings)
        reason = self._video_processor.push(frame, frame.image, frame.info, settings, publish, sparse, want_points,
                                            reset_request=request)
        if reason is not None:
            self._reject(frame, reason)
            return
        self._snapshot_video_state()

    def _on_video_reset(self, reason: str, kind: str) -> None:
        """Worker side, after the stream was reset: log why (a failure is logged as the frame's error)."""
        if kind == "asked":
            self.get_logger().info(f"video stream reset: {reason}")
        elif kind == "stamp_back":
            self.get_logger().warning(f"video stream reset: {reason}")
        self._snapshot_video_state()

    def _snapshot_video_state(self) -> None:
        video = self._video_processor
        with self._lock:
            self._video_state.update(cache_state=self._stream.cache.state, references=len(self._stream.cache.entries),
                                     reanchors=self._stream.reanchors, resets=video.resets, dropped=video.dropped)

    def _request_reset(self, source: str) -> None:
        with self._lock:
            self._reset_request = f"asked on {source}"

    def _on_reset_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._request_reset("the reset_video service")
        response.success, response.message = True, "the video stream restarts with the next frame"
        return response

    def _on_reset_topic(self, msg: Empty) -> None:
        self._request_reset("the reset_video topic")

    def _sparse_for(self, header, values: dict[str, Any]) -> Image | None:
        """The sparse_depth message of ``header``'s frame_id nearest in time to its stamp, if within
        sparse_max_age_s: topics are not ordered with each other, and a sensor message newer than the
        image may already have arrived when the frame is processed."""
        candidates = [m for m in list(self._sparse_depths) if m.header.frame_id == header.frame_id]
        return nearest_by_stamp(candidates, header_stamp_ns(header), round(values["sparse_max_age_s"] * 1e9))

    def _on_sparse_depth(self, msg: Image) -> None:
        self._sparse_depths.append(msg)

    def _status(self, processed: ProcessedFrame, settings: Settings, stages: dict[str, float]) -> DepthStatus:
        values = settings.values
        if self._video:
            processing_h = processing_w = self.pipeline.dit.input_size
        else:
            processing_h, processing_w = processing_size(*processed.rgb.shape[:2], self.pipeline.target_area)
        output_h, output_w = processed.depth.shape
        decoding = settings.decoder.parameters()
        header = processed.header
        age_ns = self.get_clock().now().nanoseconds - header_stamp_ns(header)
        with self._lock:
            counts, video = dict(self._counts), dict(self._video_state)
        return DepthStatus(
            header=header, model_id=self.model_id, backend=self.backend, backend_fallback=self.backend_fallback,
            device=str(self.pipeline.device),
            dtype=values["dtype"], steps=values["steps"] if self._video else self.pipeline.steps,
            processing_width=processing_w,
            processing_height=processing_h, output_width=output_w, output_height=output_h,
            depth_mode=settings.decoder.mode, is_metric=processed.is_metric,
            intrinsics_source=values["intrinsics_source"],
            decoding_parameter_names=list(decoding), decoding_parameter_values=[float(v) for v in decoding.values()],
            age_ms=age_ns / 1e6, frames_received=counts["received"], frames_processed=counts["processed"],
            frames_dropped=self._dropped(), frames_rejected=counts["rejected"], frames_idle=counts["idle"],
            scale_state=processed.scale_state,
            flying_pixel_filter=values["flying_pixel_threshold"] > 0,
            flying_pixels_removed=processed.flying_pixels_removed,
            **{stage: float(ms) for stage, ms in stages.items()},
            mode=values["mode"], video_streaming=values["video_streaming"] if self._video else "",
            video_cache_state=video["cache_state"], video_references=video["references"],
            video_reanchors=video["reanchors"], video_resets=video["resets"],
        )

    def _dropped(self) -> int:
        with self._lock:
            video_dropped = self._video_state["dropped"]
        return self._worker.dropped + self._pairer.dropped_unpaired + video_dropped

    # --- diagnostics -------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.perf_counter()
        with self._lock:
            window, elapsed = self._window, now - self._window_start
            self._window = {"processed": 0, "rejected": 0, "failed": 0, "stage_sums": dict.fromkeys(STAGES, 0.0)}
            self._window_start = now
            counts = dict(self._counts)
        pending_age_ns, pending = self._pairer.pending_age_ns(), self._pairer.pending
        waiting = pending_age_ns is not None and pending is not None and pending_age_ns > CAMERA_INFO_WAIT_WARN_S * 1e9
        if waiting:
            stamp, frame_id = pending
            self.get_logger().warning(
                f"no CameraInfo for the image stamped {stamp} on '{frame_id}' after {pending_age_ns / 1e9:.1f} s: "
                "check the camera_info topic (same frame_id, same stamp), or set pairing:=latest",
                throttle_duration_sec=5.0,
            )
        level, message = DiagnosticStatus.OK, "running"
        if window["failed"]:
            level, message = DiagnosticStatus.ERROR, f"{window['failed']} frames failed in inference"
        elif window["rejected"]:
            level, message = DiagnosticStatus.WARN, f"{window['rejected']} input frames rejected"
        elif waiting:
            level, message = DiagnosticStatus.WARN, "waiting for CameraInfo"
        processed = window["processed"]
        values = self._settings.values
        entries = {
            "rate_hz": processed / elapsed if elapsed > 0 else 0.0,
            **{f"mean_{stage}": window["stage_sums"][stage] / processed if processed else float("nan")
               for stage in STAGES},
            "frames_received": counts["received"], "frames_processed": counts["processed"],
            "frames_dropped": self._dropped(), "frames_rejected": counts["rejected"], "frames_idle": counts["idle"],
            "frames_failed": self._worker.failed,
            "model": self.model_id, "backend": self.backend, "backend_requested": self.backend_requested,
            "backend_fallback": self.backend_fallback, "device": str(self.pipeline.device), "dtype": values["dtype"],
            "steps": values["steps"] if self._video else self.pipeline.steps, "depth_mode": self._settings.decoder.mode,
            "is_metric": self._settings.decoder.is_metric,
        }
        if self._video:  # image mode keeps its keys unchanged
            with self._lock:
                video = dict(self._video_state)
            entries.update(mode="video", video_streaming=values["video_streaming"],
                           video_cache_state=video["cache_state"], video_references=video["references"],
                           video_reanchors=video["reanchors"], video_resets=video["resets"])
        status = DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: depth", message=message,
            hardware_id=self.model_id, values=[KeyValue(key=k, value=str(v)) for k, v in entries.items()],
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self._pub_diagnostics.publish(DiagnosticArray(header=header, status=[status]))

    def destroy_node(self):
        self._worker.stop(timeout=10.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``depth_node`` (``ros2 run pixel_perfect_ros depth_node``).

    SIGINT/SIGTERM only set a flag that the spin loop checks: a KeyboardInterrupt raised inside rclpy's
    message conversion would surface as an unrelated RuntimeError and a non-zero exit.
    """
    keep_freed_memory()
    stop = threading.Event()
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        try:
            node = DepthNode()
        except (CheckpointError, ValueError) as error:
            rclpy.logging.get_logger("depth_node").fatal(str(error))
            return 1
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        finally:
            executor.shutdown()
            node.destroy_node()
    return 0

if __name__ == "__main__":
    sys.exit(main())
