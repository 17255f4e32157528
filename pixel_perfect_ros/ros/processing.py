"""The depth node's per-frame processing without a node: shared by ``depth_node`` and ``ppd-bag-eval``.

Image message -> RGB -> model -> reference alignment -> decoding -> flying-pixel filter -> the depth
Image, CameraInfo and PointCloud2 the node publishes. ROS message types only (no rclpy node). The model
step is the image pipeline (``FrameProcessor.process``) or, in video mode, the stream of
``VideoFrameProcessor``, whose per-frame depth goes through the same ``FrameProcessor.finish``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from ..geometry.decoding import DepthDecoder, ReferenceAlignedDecoder, decoder_parameter_names, make_decoder
from ..geometry.filters import flying_pixel_mask
from ..geometry.projection import pixel_intrinsics, scale_intrinsics
from ..inference import bundled
from ..inference.backends import BackendOptions
from ..inference.backends.base import default_backend
from ..inference.checkpoints import CheckpointError, download_instructions, video_download_instructions
from ..inference.pipeline import DepthPrediction, PixelPerfectDepth
from ..inference.video_pipeline import PixelPerfectVideoDepth
from ..inference.video_stream import StreamingVideoDepth
from .conversions import (
    ConversionError,
    camera_info_to_intrinsics,
    depth_to_image,
    header_stamp_ns,
    image_to_array,
    image_to_depth,
    message_to_rgb8,
    nonfinite_pixels,
    scaled_camera_info,
)
from .parameters import SPECS
from .pointcloud import point_cloud


@dataclass(frozen=True)
class Settings:
    """The run-time-changeable parameter values with what is derived from them; replaced as a whole."""

    values: dict[str, Any]
    decoder: DepthDecoder

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "Settings":
        mode = values["depth_mode"]
        params = {name: values[name] for name in decoder_parameter_names(mode)}
        return cls(values=dict(values), decoder=make_decoder(mode, **params))


def resolve_backend(values: dict[str, Any]) -> str:
    """The backend the node asks for: ``values['backend']``, with auto resolved for the device
    (``backends.base.default_backend``); torch in video mode (PPVD has no other backend)."""
    if values.get("mode") == "video":
        return "torch"
    backend = values["backend"]
    return default_backend(torch.device(values["device"])) if backend == "auto" else backend


def backend_options(values: dict[str, Any]) -> BackendOptions:
    """The compiled backends' settings of the node's parameter ``values``."""
    return BackendOptions(engine_file_path=values["engine_file_path"],
                          force_engine_update=values["force_engine_update"],
                          max_height=values["max_processing_height"], max_width=values["max_processing_width"])


def _device(name: str) -> torch.device:
    """The torch device ``name``; ValueError for a CUDA device without CUDA (never silently the CPU)."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available to torch")
    return device


def load_pipeline(values: dict[str, Any], logger=None) -> PixelPerfectDepth:
    """The model of the node's parameter ``values`` (checkpoint, semantics, device, dtype, steps, seed,
    backend and its options, ...).

    With checkpoint and semantics both empty, the bundled model: fills in ``values``' checkpoint,
    semantics, semantics_type and (when at its default) target_area, and warns through
    ``logger.warning`` when a logger is given. The official MoGe-2 file given as semantics also serves as
    the metric model. A backend that cannot start falls back to torch (``pipeline.backend_fallback``
    says why; also warned through ``logger``).

    Raises:
        CheckpointError: for only one of checkpoint and semantics set, or unreadable model files.
        ValueError: for a CUDA device without CUDA.
    """
    if bool(values["checkpoint"]) != bool(values["semantics"]):
        raise CheckpointError("set both 'checkpoint' and 'semantics', or neither for the bundled model.\n"
                              + download_instructions())
    device = _device(values["device"])
    seed = None if values["seed"] < 0 else values["seed"]
    bundled_model = not values["checkpoint"]
    if bundled_model:
        values.update(checkpoint=str(bundled.CHECKPOINT), semantics=str(bundled.SEMANTICS),
                      semantics_type=bundled.SEMANTICS_TYPE)
        if values["target_area"] == SPECS["target_area"].default:
            values["target_area"] = bundled.TARGET_AREA
        if logger is not None:
            logger.warning("no checkpoint set: using the bundled tiny model trained on synthetic rooms (not for real "
                           "cameras: set 'checkpoint' and 'semantics' to the official files)")
    # The official MoGe-2 model.pt also gives metric depth; the bundled file is an encoder only.
    shared = values["semantics"] if values["semantics_type"] == "moge2" and not bundled_model else ""
    pipeline = PixelPerfectDepth.from_checkpoints(
        values["checkpoint"], values["semantics"], values["semantics_type"], steps=values["steps"],
        target_area=values["target_area"], device=device, dtype=values["dtype"], seed=seed,
        metric_checkpoint=values["moge2_checkpoint"] or shared or None,
        backend=resolve_backend(values), backend_options=backend_options(values),
    )
    if pipeline.backend_fallback and logger is not None:
        logger.warning(pipeline.backend_fallback)
    return pipeline


def load_video_stream(values: dict[str, Any]) -> StreamingVideoDepth:
    """The video-mode model of the node's parameter ``values``: PPVD (``load_video_model``) streamed as
    ``video_stream`` gives.

    Raises:
        CheckpointError: for an unset, missing or unreadable model file (with the download instructions).
        ValueError: for a CUDA device without CUDA.
    """
    return video_stream(load_video_model(values), values)


def load_video_model(values: dict[str, Any]) -> PixelPerfectVideoDepth:
    """PPVD of the node's parameter ``values``: ``checkpoint`` ppvd.pth, ``semantics`` Pi3 model.safetensors;
    steps, seed, device, dtype.

    Raises:
        CheckpointError: for an unset, missing or unreadable model file (with the download instructions).
        ValueError: for a CUDA device without CUDA.
    """
    if not values["checkpoint"] or not values["semantics"]:
        raise CheckpointError("video mode needs 'checkpoint' (ppvd.pth) and 'semantics' (Pi3 model.safetensors); "
                              "there is no bundled video model.\n" + video_download_instructions())
    device = _device(values["device"])
    try:
        return PixelPerfectVideoDepth.from_checkpoints(
            values["checkpoint"], values["semantics"], steps=values["steps"], device=device, dtype=values["dtype"],
            seed=None if values["seed"] < 0 else values["seed"])
    except CheckpointError as error:
        raise CheckpointError(f"{error}\n{video_download_instructions()}") from error


def video_stream(model: PixelPerfectVideoDepth, values: dict[str, Any]) -> StreamingVideoDepth:
    """A fresh stream of ``model`` as ``video_streaming`` with the video_* parameters of ``values``."""
    return StreamingVideoDepth(model, frames_per_window=values["video_frames_per_window"],
                               keyframe_every=values["video_keyframe_every"],
                               max_scale_jump=values["video_max_scale_jump"], mode=values["video_streaming"])


def model_id(values: dict[str, Any]) -> str:
    """The model's name in status and diagnostics: ``'ppd.pth + moge2.pt (moge2)'`` (file names and
    semantics type, ``pi3`` in video mode), prefixed ``'bundled '`` for the bundled model (``values`` as
    filled by ``load_pipeline``)."""
    semantics_type = "pi3" if values.get("mode") == "video" else values["semantics_type"]
    name = (f"{values['checkpoint'].rsplit('/', 1)[-1]} + {values['semantics'].rsplit('/', 1)[-1]} "
            f"({semantics_type})")
    return f"bundled {name}" if values["checkpoint"] == str(bundled.CHECKPOINT) else name


def nearest_by_stamp(messages: Iterable, stamp_ns: int, max_age_ns: int):
    """The message (anything with ``.header``) stamped nearest to ``stamp_ns`` (ns), or None if none is
    within ``max_age_ns`` (ns, inclusive) of it."""
    nearest = min(messages, key=lambda m: abs(header_stamp_ns(m.header) - stamp_ns), default=None)
    if nearest is None or abs(header_stamp_ns(nearest.header) - stamp_ns) > max_age_ns:
        return None
    return nearest


@dataclass
class ProcessedFrame:
    """One processed frame: the published messages and the arrays they were made from.

    Attributes:
        header: the source image's header (stamp, optical frame_id), on every output message.
        rgb: (H, W, 3) uint8 source image.
        normalised: (h, w) float32 model output (normalised log-depth) at the published size.
        depth: (h, w) float32 published depth: metres if ``is_metric``, else relative; NaN = invalid.
        K: (3, 3) float64 camera matrix of the published depth, pixels.
        depth_msg: the ``depth/image`` message (encoding per output_encoding).
        info_msg: the ``depth/camera_info`` message (K, P scaled to (h, w)).
        points_msg: the ``depth/points`` message, or None when not wanted or publish_points is false.
        is_metric: whether ``depth`` is in metres (after this frame's decoder update).
        scale_state: the decoder's state after this frame ('' for decoders without one).
        flying_pixels_removed: pixels set to NaN by the flying-pixel filter.
        stages_ms: wall time per stage, ms: decode_ms, preprocess_ms, semantics_ms, sampling_ms, postprocess_ms.
        messages_ms: wall time building the three output messages, ms (the node counts it in publish_ms).
        nonfinite_pixels: NaN/inf pixels of a 32FC1 source image, read as 0 (0 for other encodings).
        sparse_error: why the given sparse message could not be read ('' if read or none given); the
            frame then decodes as without one.
    """

    header: Header
    rgb: np.ndarray
    normalised: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    depth_msg: Image
    info_msg: CameraInfo
    points_msg: PointCloud2 | None
    is_metric: bool
    scale_state: str
    flying_pixels_removed: int
    stages_ms: dict[str, float]
    messages_ms: float = 0.0
    nonfinite_pixels: int = 0
    sparse_error: str = ""


@dataclass(frozen=True)
class ReadFrame:
    """A frame's messages read into arrays (``FrameProcessor.read``), before the model.

    Attributes:
        image: the source image message (its header goes on every output).
        info: its CameraInfo, or None (intrinsics from MoGe-2).
        rgb: (H, W, 3) uint8 RGB of ``image``.
        K: (3, 3) float64 camera matrix at (H, W), pixels; None without ``info``.
        P: (3, 4) float64 projection matrix at (H, W), pixels; None without ``info``.
        nonfinite_pixels: NaN/inf pixels of a 32FC1 image, read as 0 (0 for other encodings).
        decode_ms: wall time of the reading, ms.
    """

    image: Image | CompressedImage
    info: CameraInfo | None
    rgb: np.ndarray
    K: np.ndarray | None
    P: np.ndarray | None
    nonfinite_pixels: int
    decode_ms: float


class FrameProcessor:
    """The node's per-frame path without a node: image message -> RGB -> model -> reference alignment ->
    decoding -> flying-pixel filter -> output messages. Used by depth_node and ppd-bag-eval.

    Attributes:
        pipeline: the model (``PixelPerfectDepth`` or anything called like it); may be replaced between frames.
    """

    def __init__(self, pipeline: PixelPerfectDepth):
        self.pipeline = pipeline

    def process(self, image: Image | CompressedImage, info: CameraInfo | None, settings: Settings,
                sparse: Image | None = None, want_points: bool = True) -> ProcessedFrame:
        """Process one frame with ``settings`` (updating ``settings.decoder``'s state, if it keeps one):
        ``read``, the model, then ``finish``.

        Args:
            image: the camera image (any encoding ``message_to_rgb8`` reads).
            info: its CameraInfo; None = intrinsics from MoGe-2 (intrinsics_source moge2).
            settings: parameter values and decoder.
            sparse: the sensor depth (REP 118 Image) for this frame in depth_mode sparse_topic; None = none.
            want_points: whether to build the point cloud (also needs publish_points).

        Raises:
            ConversionError: for an image or CameraInfo that cannot be read (the frame is unusable).
        """
        frame = self.read(image, info)
        prediction = self.pipeline(frame.rgb, metric_reference=settings.decoder.mode == "moge2" or info is None)
        return self.finish(frame, prediction, settings, sparse, want_points)

    @staticmethod
    def read(image: Image | CompressedImage, info: CameraInfo | None) -> "ReadFrame":
        """Messages -> arrays: the image's RGB and, with ``info``, its intrinsics at the image size.

        Raises:
            ConversionError: for an image or CameraInfo that cannot be read (the frame is unusable).
        """
        start = time.perf_counter()
        rgb = message_to_rgb8(image)
        height, width = rgb.shape[:2]
        K = P = None
        if info is not None:
            K, P = camera_info_to_intrinsics(info, width, height)
        nonfinite = 0
        if isinstance(image, Image) and image.encoding == "32FC1":
            nonfinite = nonfinite_pixels(image_to_array(image))
        return ReadFrame(image=image, info=info, rgb=rgb, K=K, P=P, nonfinite_pixels=nonfinite,
                         decode_ms=(time.perf_counter() - start) * 1e3)

    @staticmethod
    def finish(frame: "ReadFrame", prediction: DepthPrediction, settings: Settings, sparse: Image | None = None,
               want_points: bool = True) -> ProcessedFrame:
        """The post-model path of one frame, shared by image and video mode: intrinsics, reference
        alignment, decoding, flying-pixel filter and the output messages (with the frame's header).

        Args:
            frame: the frame as ``read`` gave it.
            prediction: the model's normalised log-depth of ``frame.rgb`` (``depth`` at the image size;
                ``processing_depth`` and ``metric_reference`` as the modes in use need them) and its
                ``timings_ms`` (preprocess, semantics, sampling, postprocess).
            settings, sparse, want_points: as ``process``.
        """
        values = settings.values
        start = time.perf_counter()
        rgb, info, K, P = frame.rgb, frame.info, frame.K, frame.P
        height, width = rgb.shape[:2]
        decoder = settings.decoder
        # 1. Intrinsics, reference alignment, decoding, flying-pixel filter.
        if info is None:  # intrinsics_source moge2: an ideal pinhole camera with MoGe-2's intrinsics
            K = pixel_intrinsics(prediction.metric_reference.intrinsics, width, height)
            P = np.hstack([K, np.zeros((3, 1))])
            info = CameraInfo(distortion_model="plumb_bob", d=[0.0] * 5, r=np.eye(3).ravel())
        sparse_error = ""
        if isinstance(decoder, ReferenceAlignedDecoder):
            n, reference, sparse_error = _reference(decoder.mode, prediction, sparse)
            decoder.update(n, reference)
        normalised = prediction.depth if values["output_resolution"] == "input" else prediction.processing_depth
        depth = decoder(normalised)
        flying = 0
        if values["flying_pixel_threshold"] > 0:
            mask = flying_pixel_mask(depth, values["flying_pixel_threshold"])
            depth[mask], flying = np.nan, int(mask.sum())
        out_h, out_w = depth.shape
        K_out, P_out = scale_intrinsics(K, P, out_w / width, out_h / height)
        postprocessed = time.perf_counter()

        # 2. Output messages, all with the source image's header.
        header = frame.image.header
        depth_msg = depth_to_image(depth, header, values["output_encoding"])
        info_msg = scaled_camera_info(info, K_out, P_out, out_w, out_h, header)
        points_msg = None
        if values["publish_points"] and want_points:
            colours = None
            if values["points_xyzrgb"]:
                colours = rgb if (out_h, out_w) == (height, width) else cv2.resize(
                    rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
            points_msg = point_cloud(depth, P_out, header, colours, values["points_decimation"])
        packed = time.perf_counter()

        timings = prediction.timings_ms
        return ProcessedFrame(
            header=header, rgb=rgb, normalised=normalised, depth=depth, K=K_out, depth_msg=depth_msg,
            info_msg=info_msg, points_msg=points_msg, is_metric=decoder.is_metric,
            scale_state=getattr(decoder, "state", ""), flying_pixels_removed=flying,
            stages_ms={
                "decode_ms": frame.decode_ms,
                "preprocess_ms": timings["preprocess"],
                "semantics_ms": timings["semantics"],
                "sampling_ms": timings["sampling"],
                "postprocess_ms": timings["postprocess"] + (postprocessed - start) * 1e3,
            },
            messages_ms=(packed - postprocessed) * 1e3, nonfinite_pixels=frame.nonfinite_pixels,
            sparse_error=sparse_error,
        )


class VideoFrameProcessor:
    """Video mode's per-frame path without a node, shared by depth_node and ppd-bag-eval: each frame is
    read and pushed into the stream with its stamp; each (stamp, depth) the stream returns (possibly
    several at once, and later than the frame's push) is matched to the frame of that stamp and goes
    through ``FrameProcessor.finish``.

    The stream restarts (``reset``) when asked, when a stamp goes back (a bag looping, a clock jump) and
    when the stream or the finishing of its frames fails (its pending frames are then in an unknown state).

    Args:
        stream: the streaming model.
        processor: the per-frame path (its ``read`` and ``finish``).
        on_reset: called after every reset with (why, kind): kind "asked", "stamp_back" or "error".

    Attributes:
        resets: how many times the stream was reset.
        dropped: frames pushed but never returned, dropped by resets.
    """

    def __init__(self, stream: StreamingVideoDepth, processor: FrameProcessor,
                 on_reset: Callable[[str, str], None] | None = None):
        self.stream = stream
        self.processor = processor
        self.on_reset = on_reset
        self.resets = 0
        self.dropped = 0
        # The frames pushed and not yet returned, by stamp: (caller's key, read frame, sparse depth).
        self._frames: dict[int, tuple[Any, ReadFrame, Image | None]] = {}
        self._last_stamp_ns: int | None = None

    @property
    def pending(self) -> int:
        """Frames pushed and not yet returned (the stream's incomplete group)."""
        return len(self._frames)

    def push(self, key: Any, image: Image | CompressedImage, info: CameraInfo | None, settings: Settings,
             on_frame: Callable[[Any, ProcessedFrame], None], sparse: Image | None = None,
             want_points: bool = True, reset_request: str | None = None) -> str | None:
        """Push one frame; finish every frame the stream returns and hand each to ``on_frame``, in order.

        Args:
            key: the caller's handle of the frame, given back to ``on_frame`` with its processed frame.
            image, info, settings, sparse, want_points: as ``FrameProcessor.process``.
            on_frame: called with (key, ``ProcessedFrame``) of each returned frame, as soon as it is finished.
            reset_request: why the stream is to restart before this frame (None = no request).

        Returns:
            Why the frame was rejected (unreadable; the stamp of a frame already pushed), or None.

        Raises:
            Whatever the stream, ``finish`` or ``on_frame`` raise, after resetting the stream.
        """
        stamp = header_stamp_ns(image.header)
        if reset_request is not None:
            self.reset(reset_request, "asked")
        elif self._last_stamp_ns is not None and stamp < self._last_stamp_ns:
            self.reset(f"the stamp went back from {self._last_stamp_ns} to {stamp} ns (bag loop or clock jump)",
                       "stamp_back")
        if stamp in self._frames or stamp == self._last_stamp_ns:
            return "same stamp as an earlier frame of the stream"
        try:
            read = self.processor.read(image, info)
        except ConversionError as error:
            return str(error)
        self._frames[stamp] = (key, read, sparse)
        self._last_stamp_ns = stamp
        self._finish(self.stream.push, (read.rgb, stamp), settings, on_frame, want_points)
        return None

    def flush(self, settings: Settings, on_frame: Callable[[Any, ProcessedFrame], None],
              want_points: bool = True) -> None:
        """At the end of a stream: run the frames waiting for their group (``StreamingVideoDepth.flush``)
        and hand each to ``on_frame`` as ``push`` does."""
        self._finish(self.stream.flush, (), settings, on_frame, want_points)

    def reset(self, reason: str, kind: str) -> None:
        """Clear the stream's references and the frames waiting in its group (counted as dropped)."""
        self.stream.reset()
        self.dropped += len(self._frames)
        self.resets += 1
        self._frames.clear()
        self._last_stamp_ns = None
        if self.on_reset is not None:
            self.on_reset(reason, kind)

    def _finish(self, run: Callable, args: tuple, settings: Settings, on_frame: Callable[[Any, ProcessedFrame], None],
                want_points: bool) -> None:
        """``run(*args)`` on the stream, then finish the frames it returns (sharing its timings_ms)."""
        try:
            results = run(*args)
        except Exception:
            self.reset("the stream failed", "error")  # its pending frames are in an unknown state
            raise
        share = {stage: ms / len(results) for stage, ms in self.stream.timings_ms.items()} if results else {}
        try:
            for out_stamp, depth in results:  # (stamp ns, (H, W) float32 normalised log-depth), in push order
                key, read, sparse = self._frames.pop(out_stamp)
                prediction = DepthPrediction(depth=depth, processing_depth=depth, timings_ms=share)
                on_frame(key, self.processor.finish(read, prediction, settings, sparse, want_points))
        except Exception:
            self.reset("finishing a frame failed", "error")  # the frames left of this push would never be done
            raise


def _reference(mode: str, prediction: DepthPrediction, sparse: Image | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(normalised depth, metric reference depth in metres, why ``sparse`` is unusable or '') for a
    reference-aligned decoder; a (1, 1) NaN reference when there is none."""
    if mode == "moge2":
        return prediction.processing_depth, prediction.metric_reference.depth, ""  # inf outside MoGe-2's mask
    no_reference = np.full((1, 1), np.nan, np.float32)
    if sparse is None:
        return prediction.depth, no_reference, ""
    try:
        return prediction.depth, image_to_depth(sparse), ""
    except ConversionError as error:
        return prediction.depth, no_reference, str(error)
