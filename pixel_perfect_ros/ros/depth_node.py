"""``depth_node``: camera image in; depth image, CameraInfo, organized point cloud and status out.

Topics (relative to the node namespace, remappable):
    in:  ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage), ``camera_info``,
         video mode: ``reset_video`` (std_msgs/Empty)
    out: ``depth/image`` (32FC1 metres or relative units, NaN = invalid; or 16UC1 mm, 0 = invalid),
         ``depth/camera_info`` (K, P scaled to the depth image), ``depth/points`` (organized PointCloud2),
         ``depth/uncertainty`` (32FC1, with uncertainty_samples > 1: the spread of the samples),
         ``depth/status`` (pixel_perfect_ros/DepthStatus), ``/diagnostics``.
Service (video mode): ``~/reset_video`` (std_srvs/Trigger).
Every output carries the source image's header (stamp and optical frame_id).

Modes: the node holds one ``processors.FrameProcessor`` (shared with ppd-bag-eval) and does not branch on
the mode. ``image`` runs PPD on every frame on its own. ``video`` pushes every frame into a
``StreamingVideoDepth`` (PPVD) with its stamp; each frame it returns, possibly several at once and later
than the frame's push, is published with that frame's header. The stream's references are cleared on
``reset_video`` (before the next frame is pushed) and when a stamp goes back.

Threads: the executor only pairs and hands frames over; inference runs in an ``InferenceWorker``
behind a latest-frame-wins slot, so the executor never blocks and late frames are dropped and counted.
Parameter changes reach the model in the worker, between frames (video mode: between groups), so each
frame's status reports what it ran with. Shutdown interrupts a frame in flight at its next module call
(``inference.interrupt``), well inside launch's 5 s grace.
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
import torch
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

from ..geometry.validity import MIN_VALID_FRACTION, valid_fraction
from ..inference.checkpoints import CheckpointError
from ..inference.interrupt import StopFlag
from ..msg import DepthStatus
from .allocator import keep_freed_memory
from .conversions import header_stamp_ns, quoted
from .latest_slot import InferenceWorker
from .pairing import CameraInfoPairer
from .parameters import PARAMETERS, SPECS, NodeSettings, check_settings, load_node_model
from .processing import FrameSettings, ProcessedFrame, nearest_by_stamp
from .processors import FrameProcessor, make_processor
from .sequence_gaps import SequenceGaps

CAMERA_INFO_WAIT_WARN_S = 1.0
"""An image waiting this long for its CameraInfo triggers a (throttled) warning."""
SPARSE_BUFFER = 10
"""Recent sparse_depth messages kept to find the one nearest in time to each image."""
WORKER_STOP_S = 3.0
"""Longest wait at shutdown for the frame in flight (interrupted at its next module call), seconds:
inside launch's 5 s grace between SIGINT and SIGTERM."""
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
        self._stop = StopFlag()
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        settings = NodeSettings(**{spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS})
        reason = check_settings(settings)
        if reason:
            raise ValueError(reason)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        loaded, model_settings = load_node_model(settings, log=self.get_logger().warning)
        for warning in loaded.warnings:
            self.get_logger().warning(warning)
        if model_settings != settings:  # the bundled model's own area
            settings = model_settings
            self.set_parameters([Parameter("target_area", value=settings.target_area)])
        self._processor: FrameProcessor = make_processor(loaded, settings, self._on_reset)
        self._stop.attach(self._processor.model)
        reason = self._processor.refusal(settings, settings)  # check_settings passed above
        if reason:
            raise ValueError(reason)
        self._settings = FrameSettings.of(settings)
        self._applied = settings  # the settings the model runs with (taken by the worker between frames)
        self.model_id = loaded.name
        self.backend_requested = loaded.backend_requested  # the backend asked for (auto resolved)

        self._lock = threading.Lock()
        self._counts = {"received": 0, "processed": 0, "rejected": 0, "idle": 0}
        self._window = self._new_window()
        self._gaps = SequenceGaps()  # image messages lost before the node (executor side, under _lock)
        self._window_start = time.perf_counter()
        # Executor side (under _lock): the reset request and the snapshot of the processor's state (its
        # status fields and dropped frames), taken by the worker, which alone runs the processor.
        self._reset_request: str | None = None
        self._mode_status = self._processor.status()
        self._mode_dropped = 0
        self._pairer = self._make_pairer(settings)
        self._worker = InferenceWorker(self._process, self._on_worker_error)

        out_qos = _qos(settings.output_reliability, settings.output_depth)
        self._pub_depth = self.create_publisher(Image, "depth/image", out_qos)
        self._pub_info = self.create_publisher(CameraInfo, "depth/camera_info", out_qos)
        self._pub_points = self.create_publisher(PointCloud2, "depth/points", out_qos)
        self._pub_uncertainty = self.create_publisher(Image, "depth/uncertainty", out_qos)
        self._pub_status = self.create_publisher(DepthStatus, "depth/status", out_qos)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        in_qos = _qos(settings.input_reliability, settings.input_depth)
        if settings.use_compressed:
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, in_qos)
        else:
            self.create_subscription(Image, "image", self._on_image, in_qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, in_qos)
        self._sparse_depths: deque[Image] = deque(maxlen=SPARSE_BUFFER)  # appended by the executor
        self.create_subscription(Image, "sparse_depth", self._on_sparse_depth, in_qos)
        if self._processor.resettable:
            self.create_service(Trigger, "~/reset_video", self._on_reset_service)
            self.create_subscription(Empty, "reset_video", self._on_reset_topic, 10)

        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.create_timer(1.0, self._publish_diagnostics)
        video = (f"; video {settings.video_streaming}, {settings.video_frames_per_window} frames per window"
                 if settings.mode == "video" else "")
        samples = f", {settings.uncertainty_samples} samples per frame" if settings.uncertainty_samples > 1 else ""
        self.get_logger().info(
            f"model {self.model_id} on {settings.device} ({settings.dtype}, {settings.steps} steps{samples}, backend "
            f"{self.backend}); depth_mode {settings.depth_mode}; input "
            f"{'image/compressed' if settings.use_compressed else 'image'}{video}"
        )

    # --- set-up ------------------------------------------------------------------------------------

    @property
    def pipeline(self):
        """The model the worker runs (``PixelPerfectDepth``, or in video mode the stream's
        ``PixelPerfectVideoDepth``); replaceable between frames."""
        return self._processor.model

    @pipeline.setter
    def pipeline(self, pipeline) -> None:
        self._stop.attach(pipeline)
        self._processor.model = pipeline

    @property
    def backend(self) -> str:
        """The backend running the model now (torch after a run-time fallback; video mode: torch)."""
        backend = getattr(self.pipeline, "backend", None)
        return "torch" if backend is None else backend.name

    @property
    def backend_fallback(self) -> str:
        """'' or why the backend running is not the one asked for (at start, or since a frame failed)."""
        return getattr(self.pipeline, "backend_fallback", "")

    @staticmethod
    def _new_window() -> dict[str, Any]:
        """Counters of one diagnostics period."""
        return {"processed": 0, "rejected": 0, "failed": 0, "invalid": 0, "stage_sums": dict.fromkeys(STAGES, 0.0)}

    @staticmethod
    def _make_pairer(settings: NodeSettings) -> CameraInfoPairer:
        return CameraInfoPairer(tolerance_ns=round(settings.pairing_tolerance_s * 1e9), mode=settings.pairing)

    @staticmethod
    def _own(params) -> dict[str, Any]:
        """The values of this node's parameters among ``params`` (rclpy's own, e.g. use_sim_time, left out)."""
        return {p.name: p.value for p in params if p.name in SPECS}

    def _check(self, settings: NodeSettings, current: NodeSettings) -> str | None:
        """``check_settings`` plus what the loaded model refuses (a change from ``current``)."""
        return self._processor.refusal(settings, current) or check_settings(settings)

    def _validate_parameters(self, params) -> SetParametersResult:
        current = self._settings.node
        reason = self._check(current.replace(**self._own(params)), current)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, params) -> None:
        own = self._own(params)
        if not own:
            return
        previous = self._settings
        settings = previous.node.replace(**own)
        self._settings = FrameSettings.of(settings, previous)  # the model takes it in the worker (_process)
        if settings.intrinsics_source != previous.node.intrinsics_source:
            self._pairer.drop_pending()  # it would wait for a CameraInfo no longer asked for
        if own.keys() & {"pairing", "pairing_tolerance_s"}:
            # In place: a new pairer would forget the CameraInfos received (a camera may send only one),
            # the waiting image and the drop count.
            self._pairer.reconfigure(settings.pairing, round(settings.pairing_tolerance_s * 1e9))

    # --- executor side: receive, pair, hand over ---------------------------------------------------

    def _wanted(self) -> bool:
        """Whether any output has a subscriber (or laziness is off)."""
        if not self._settings.node.lazy:
            return True
        return any(p.get_subscription_count() > 0
                   for p in (self._pub_depth, self._pub_info, self._pub_points, self._pub_uncertainty))

    def _on_image(self, msg: Image | CompressedImage, info: dict) -> None:
        wanted = self._wanted()
        with self._lock:
            self._gaps.add(info)
            self._counts["received"] += 1
            self._counts["idle"] += not wanted
        if not wanted:
            return
        if self._settings.node.intrinsics_source == "moge2":
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
            f"dropped frame {header_stamp_ns(frame.image.header)} on {quoted(frame.image.header.frame_id)}: {reason}",
            throttle_duration_sec=2.0,
        )

    def _on_worker_error(self, frame: Frame, error: BaseException) -> None:
        if self._stop.is_set() or not self.context.ok():  # stopped while this frame was in flight: no failure
            return
        with self._lock:
            self._window["failed"] += 1
        self.get_logger().error(f"inference failed on frame {header_stamp_ns(frame.image.header)}: {error!r}",
                                throttle_duration_sec=2.0)

    def _process(self, frame: Frame) -> None:
        """Push the frame into the processor, then publish every frame it finishes."""
        settings = self._settings
        if settings.node != self._applied and not self._processor.pending:  # between frames (video: groups)
            self._processor.apply(settings.node)
            self._applied = settings.node
        with self._lock:
            request, self._reset_request = self._reset_request, None
        sparse = self._sparse_for(frame.image.header, settings.node) if settings.node.depth_mode == "sparse_topic" \
            else None
        want_points = self._pub_points.get_subscription_count() > 0 or not settings.node.lazy

        def publish(source: Frame, processed: ProcessedFrame) -> None:
            self._snapshot_mode_state()
            self._publish(source, processed, settings)
        reason = self._processor.push(frame, frame.image, frame.info, settings, publish, sparse, want_points,
                                      reset_request=request)
        if reason is not None:
            self._reject(frame, reason)
            return
        self._snapshot_mode_state()

    def _publish(self, frame: Frame, processed: ProcessedFrame, settings: FrameSettings) -> None:
        """Publish one processed frame's messages and status, and count it."""
        if processed.nonfinite_pixels:
            self.get_logger().warning(f"{processed.nonfinite_pixels} NaN/inf pixels in a 32FC1 image were read as 0",
                                      throttle_duration_sec=5.0)
        if processed.sparse_error:
            self.get_logger().warning(f"sparse_depth unusable: {processed.sparse_error}", throttle_duration_sec=5.0)
        if self._stop.is_set():  # finished while the node shuts down: its publishers may be gone
            return
        start = time.perf_counter()
        self._pub_depth.publish(processed.depth_msg)
        self._pub_info.publish(processed.info_msg)
        if processed.points_msg is not None:
            self._pub_points.publish(processed.points_msg)
        if processed.uncertainty_msg is not None:
            self._pub_uncertainty.publish(processed.uncertainty_msg)
        published = time.perf_counter()

        stages = {
            **processed.stages_ms,
            "publish_ms": processed.messages_ms + (published - start) * 1e3,
            "total_ms": (published - frame.received_s) * 1e3,
        }
        valid = valid_fraction(processed.depth)
        if valid < MIN_VALID_FRACTION:
            self.get_logger().error(f"the model produced (almost) no valid depth: {valid:.1%} of the pixels",
                                    throttle_duration_sec=5.0)
        with self._lock:
            self._counts["processed"] += 1
            self._window["processed"] += 1
            self._window["invalid"] += valid < MIN_VALID_FRACTION
            for stage, ms in stages.items():
                self._window["stage_sums"][stage] += ms
        self._pub_status.publish(self._status(processed, settings, stages, valid))

    def _on_reset(self, reason: str, kind: str) -> None:
        """Worker side, after the processor was reset: log why (a failure is logged as the frame's error)."""
        if kind == "asked":
            self.get_logger().info(f"video stream reset: {reason}")
        elif kind == "stamp_back":
            self.get_logger().warning(f"video stream reset: {reason}")
        self._snapshot_mode_state()

    def _snapshot_mode_state(self) -> None:
        status, dropped = self._processor.status(), self._processor.dropped
        with self._lock:
            self._mode_status, self._mode_dropped = status, dropped

    def _request_reset(self, source: str) -> None:
        with self._lock:
            self._reset_request = f"asked on {source}"

    def _on_reset_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._request_reset("the reset_video service")
        response.success, response.message = True, "the video stream restarts with the next frame"
        return response

    def _on_reset_topic(self, msg: Empty) -> None:
        self._request_reset("the reset_video topic")

    def _sparse_for(self, header, settings: NodeSettings) -> Image | None:
        """The sparse_depth message of ``header``'s frame_id nearest in time to its stamp, if within
        sparse_max_age_s: topics are not ordered with each other, and a sensor message newer than the
        image may already have arrived when the frame is processed."""
        candidates = [m for m in list(self._sparse_depths) if m.header.frame_id == header.frame_id]
        return nearest_by_stamp(candidates, header_stamp_ns(header), round(settings.sparse_max_age_s * 1e9))

    def _on_sparse_depth(self, msg: Image) -> None:
        self._sparse_depths.append(msg)

    def _status(self, processed: ProcessedFrame, settings: FrameSettings, stages: dict[str, float],
                valid: float) -> DepthStatus:
        node = settings.node
        processing_h, processing_w = self._processor.processing_size(*processed.rgb.shape[:2])
        output_h, output_w = processed.depth.shape
        decoding = settings.decoder.parameters()
        header = processed.header
        age_ns = self.get_clock().now().nanoseconds - header_stamp_ns(header)
        with self._lock:
            counts, mode_status, lost = dict(self._counts), dict(self._mode_status), self._gaps.lost
        return DepthStatus(
            header=header, model_id=self.model_id, backend=self.backend, backend_fallback=self.backend_fallback,
            device=str(self.pipeline.device), dtype=node.dtype, steps=self.pipeline.steps,
            processing_width=processing_w,
            processing_height=processing_h, output_width=output_w, output_height=output_h,
            depth_mode=settings.decoder.mode, is_metric=processed.is_metric,
            intrinsics_source=node.intrinsics_source,
            decoding_parameter_names=list(decoding), decoding_parameter_values=[float(v) for v in decoding.values()],
            age_ms=age_ns / 1e6, frames_received=counts["received"], frames_processed=counts["processed"],
            frames_dropped=self._dropped(), frames_rejected=counts["rejected"], frames_idle=counts["idle"],
            frames_lost=lost, scale_state=processed.scale_state, valid_fraction=valid,
            flying_pixel_filter=node.flying_pixel_threshold > 0,
            flying_pixels_removed=processed.flying_pixels_removed,
            uncertainty_samples=processed.uncertainty_samples,
            uncertainty_filter=processed.uncertainty_samples > 0 and node.uncertainty_threshold > 0,
            uncertain_pixels_removed=processed.uncertain_pixels_removed,
            **{stage: float(ms) for stage, ms in stages.items()},
            **mode_status,
        )

    def _dropped(self) -> int:
        with self._lock:
            mode_dropped = self._mode_dropped
        return self._worker.dropped + self._pairer.dropped_unpaired + mode_dropped

    # --- diagnostics -------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = time.perf_counter()
        with self._lock:
            window, elapsed = self._window, now - self._window_start
            self._window, self._window_start = self._new_window(), now
            counts, lost = dict(self._counts), self._gaps.lost
        settings = self._settings
        pending_age_ns, pending = self._pairer.pending_age_ns(), self._pairer.pending
        waiting = settings.node.intrinsics_source == "camera_info" and pending_age_ns is not None and pending is not None and pending_age_ns > CAMERA_INFO_WAIT_WARN_S * 1e9
        if waiting:
            stamp, frame_id = pending
            self.get_logger().warning(
                f"no CameraInfo for the image stamped {stamp} on {quoted(frame_id)} after {pending_age_ns / 1e9:.1f} s: "
                "check the camera_info topic (same frame_id, same stamp), or set pairing:=latest",
                throttle_duration_sec=5.0,
            )
        level, message = DiagnosticStatus.OK, "running"
        if window["failed"]:
            level, message = DiagnosticStatus.ERROR, f"{window['failed']} frames failed in inference"
        elif window["invalid"]:
            level, message = DiagnosticStatus.ERROR, f"{window['invalid']} frames with (almost) no valid depth"
        elif window["rejected"]:
            level, message = DiagnosticStatus.WARN, f"{window['rejected']} input frames rejected"
        elif waiting:
            level, message = DiagnosticStatus.WARN, "waiting for CameraInfo"
        elif self.backend_fallback:
            level, message = DiagnosticStatus.WARN, f"running {self.backend}, not {self.backend_requested}"
        processed = window["processed"]
        entries = {
            "rate_hz": processed / elapsed if elapsed > 0 else 0.0,
            **{f"mean_{stage}": window["stage_sums"][stage] / processed if processed else float("nan")
               for stage in STAGES},
            "frames_received": counts["received"], "frames_processed": counts["processed"],
            "frames_dropped": self._dropped(), "frames_rejected": counts["rejected"], "frames_idle": counts["idle"],
            "frames_lost": lost, "frames_failed": self._worker.failed,
            "model": self.model_id, "backend": self.backend, "backend_requested": self.backend_requested,
            "backend_fallback": self.backend_fallback, "device": str(self.pipeline.device), "dtype": settings.node.dtype,
            "steps": self.pipeline.steps, "uncertainty_samples": getattr(self.pipeline, "samples", 1),
            "depth_mode": settings.decoder.mode, "is_metric": settings.decoder.is_metric,
        }
        with self._lock:
            mode_status = dict(self._mode_status)
        entries.update({name: mode_status[name] for name in self._processor.DIAGNOSTIC_FIELDS})
        status = DiagnosticStatus(
            level=level, name=f"{self.get_fully_qualified_name()}: depth", message=message,
            hardware_id=self.model_id, values=[KeyValue(key=k, value=str(v)) for k, v in entries.items()],
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self._pub_diagnostics.publish(DiagnosticArray(header=header, status=[status]))

    def destroy_node(self):
        worker = getattr(self, "_worker", None)  # None: the constructor failed (rclpy destroys the node anyway)
        self._stop.set()
        if worker is not None and not worker.stop(timeout=WORKER_STOP_S):
            self.get_logger().warning(f"the frame in flight did not stop within {WORKER_STOP_S:.0f} s")
        super().destroy_node()


class _StoppedWhileStarting(Exception):
    """SIGINT or SIGTERM before the node was running (e.g. during model loading)."""


def main(args: list[str] | None = None) -> int:
    """Entry point of ``depth_node`` (``ros2 run pixel_perfect_ros depth_node``); 0 after a stop by signal.

    SIGINT/SIGTERM are handled from the first line: while the node starts (model loading takes seconds)
    they end start-up at once, without a traceback; once it runs they only set a flag that the spin loop
    checks (a KeyboardInterrupt raised inside rclpy's message conversion would surface as an unrelated
    RuntimeError), and ``destroy_node`` interrupts the frame in flight.
    """
    stop, running = threading.Event(), threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()
        if not running.is_set():
            raise _StoppedWhileStarting(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    logger = rclpy.logging.get_logger("depth_node")
    keep_freed_memory()
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
            try:
                node = DepthNode()
            except (CheckpointError, ValueError) as error:
                logger.fatal(str(error))
                return 1
            running.set()
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
    except _StoppedWhileStarting as signal_name:
        logger.info(f"stopped by {signal_name} while starting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
