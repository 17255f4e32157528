"""The two modes of the node behind one contract, held by ``depth_node`` and ``ppd-bag-eval``.

A ``FrameProcessor`` takes frames one at a time (``push``) and hands every finished frame to a callback,
possibly later than its push and several at once; ``flush`` finishes what waits at the end of a stream.

- ``ImageProcessor`` (mode image): PPD on every frame on its own, finished at once.
- ``VideoProcessor`` (mode video): every frame enters a ``StreamingVideoDepth`` (PPVD) with its stamp; each
  (stamp, depth) the stream returns is matched to the frame of that stamp. The stream restarts (``reset``)
  when asked, when a stamp goes back (a bag looping, a clock jump) and when the stream or the finishing of
  its frames fails (its pending frames are then in an unknown state).

Both run the node's per-frame path around the model (``processing.read_frame`` / ``finish_frame``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..inference.loader import LoadedModel
from ..inference.pipeline import DepthPrediction
from ..inference.preprocess import processing_size
from ..inference.video_stream import StreamingVideoDepth
from .conversions import ConversionError, header_stamp_ns
from .parameters import NodeSettings
from .processing import FrameSettings, ProcessedFrame, ReadFrame, finish_frame, read_frame

OnFrame = Callable[[Any, ProcessedFrame], None]
"""Called with (the caller's key of a frame, its ``ProcessedFrame``) as soon as the frame is finished."""


class FrameProcessor(ABC):
    """One mode's per-frame processing.

    Attributes:
        model: the model run (replaceable between frames).
        resettable: whether ``reset`` means anything (the node then offers its reset service and topic).
        DIAGNOSTIC_FIELDS: the ``status`` fields that /diagnostics reports too.
        resets: how many times the processor was reset.
        dropped: frames pushed but never finished, dropped by resets.
    """

    resettable = False
    DIAGNOSTIC_FIELDS: tuple[str, ...] = ()

    def __init__(self, model):
        self.model = model
        self.resets = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Frames pushed and not yet finished."""
        return 0

    @abstractmethod
    def push(self, key: Any, image: Image | CompressedImage, info: CameraInfo | None, settings: FrameSettings,
             on_frame: OnFrame, sparse: Image | None = None, want_points: bool = True,
             reset_request: str | None = None) -> str | None:
        """Push one frame; hand every frame finished by it to ``on_frame``, in order.

        Args:
            key: the caller's handle of the frame, given back to ``on_frame``.
            image: the camera image (any encoding ``conversions.message_to_rgb8`` reads).
            info: its CameraInfo; None = intrinsics from MoGe-2 (intrinsics_source moge2).
            settings: the settings and depth decoder of this frame.
            on_frame: see ``OnFrame``.
            sparse: the sensor depth (REP 118 Image) of this frame in depth_mode sparse_topic; None = none.
            want_points: whether to build the point cloud (also needs publish_points).
            reset_request: why to reset before this frame (None = no request; ignored when not resettable).

        Returns:
            Why the frame was rejected (unreadable image or CameraInfo, ...), or None.
        """

    def flush(self, settings: FrameSettings, on_frame: OnFrame, want_points: bool = True) -> None:
        """At the end of a stream: finish the frames still waiting and hand each to ``on_frame``."""

    def reset(self, reason: str, kind: str) -> None:
        """Forget the state kept between frames (none here)."""

    def apply(self, settings: NodeSettings) -> None:
        """Take changed run-time parameters into the model (between frames)."""
        self.model.steps = settings.steps

    def refusal(self, settings: NodeSettings, current: NodeSettings) -> str | None:
        """Why the model cannot run ``settings`` (a change from ``current``), or None."""
        return None

    @abstractmethod
    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) the network runs at for an input of height x width, pixels."""

    def notes(self) -> dict[str, str]:
        """This mode's lines in an evaluation report (ppd-bag-eval): its parameters and what it dropped."""
        return {}

    def status(self) -> dict[str, Any]:
        """This mode's ``DepthStatus`` fields (mode, video_*)."""
        return {"mode": "image", "video_streaming": "", "video_cache_state": "", "video_references": 0,
                "video_reanchors": 0, "video_resets": 0}


class ImageProcessor(FrameProcessor):
    """Mode image: PPD on every frame on its own (``model`` a ``PixelPerfectDepth`` or anything called
    like it: ``model(rgb, metric_reference=...) -> DepthPrediction``)."""

    MAX_AREA_FACTOR = 2
    """Largest processing area accepted, in target areas: ``processing_size`` rounds each side to at least
    16 px, so an extreme aspect ratio (1x100000) would run at many times the target area."""

    def process(self, image: Image | CompressedImage, info: CameraInfo | None, settings: FrameSettings,
                sparse: Image | None = None, want_points: bool = True) -> ProcessedFrame:
        """One frame through read -> model -> finish (arguments as ``push``).

        Raises:
            ConversionError: for an image or CameraInfo that cannot be read, an image above max_input_pixels,
                or one whose processing size is above ``MAX_AREA_FACTOR`` target areas (the frame is unusable).
        """
        frame = read_frame(image, info, settings.node.max_input_pixels)
        height, width = frame.rgb.shape[:2]
        run_h, run_w = self.processing_size(height, width)
        if run_h * run_w > self.MAX_AREA_FACTOR * self.model.target_area:
            raise ConversionError(
                f"aspect ratio too extreme: a {width}x{height} image would run at {run_w}x{run_h} = "
                f"{run_w * run_h} pixels, above {self.MAX_AREA_FACTOR} x target_area {self.model.target_area}")
        prediction = self.model(frame.rgb, metric_reference=settings.decoder.mode == "moge2" or info is None)
        return finish_frame(frame, prediction, settings, sparse, want_points)

    def push(self, key, image, info, settings, on_frame, sparse=None, want_points=True, reset_request=None):
        try:
            processed = self.process(image, info, settings, sparse, want_points)
        except ConversionError as error:
            return str(error)
        on_frame(key, processed)
        return None

    def apply(self, settings: NodeSettings) -> None:
        self.model.steps = settings.steps
        self.model.target_area = settings.target_area
        self.model.seed = None if settings.seed < 0 else settings.seed
        self.model.samples = settings.uncertainty_samples  # N > 1: samples (and so depth/uncertainty) per frame

    def refusal(self, settings: NodeSettings, current: NodeSettings) -> str | None:
        uses_moge2 = [f"{name} moge2" for name in ("depth_mode", "intrinsics_source")
                      if getattr(settings, name) == "moge2"]
        if uses_moge2 and self.model.metric_model is None:
            return (f"{' and '.join(uses_moge2)} needs the MoGe-2 model: restart with moge2_checkpoint set, or "
                    "with semantics_type moge2")
        return None

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        return processing_size(height, width, self.model.target_area)


class VideoProcessor(FrameProcessor):
    """Mode video: frames pushed into a ``StreamingVideoDepth`` with their stamps (see the module docstring).

    Args:
        stream: the streaming model (``model`` is its ``PixelPerfectVideoDepth``).
        on_reset: called after every reset with (why, kind): kind "asked", "stamp_back" or "error".
    """

    resettable = True
    DIAGNOSTIC_FIELDS = ("mode", "video_streaming", "video_cache_state", "video_references", "video_reanchors",
                         "video_resets")
    FIXED = ("seed", "target_area")
    """Parameters fixed when the stream starts (one initial noise; the DiT's own input size)."""

    def __init__(self, stream: StreamingVideoDepth, on_reset: Callable[[str, str], None] | None = None):
        super().__init__(stream.model)
        self.stream = stream
        self.on_reset = on_reset
        # The frames pushed and not yet returned, by stamp: (caller's key, read frame, sparse depth).
        self._frames: dict[int, tuple[Any, ReadFrame, Image | None]] = {}
        self._last_stamp_ns: int | None = None

    @property
    def pending(self) -> int:
        """Frames pushed and not yet returned (the stream's incomplete group)."""
        return len(self._frames)

    def push(self, key, image, info, settings, on_frame, sparse=None, want_points=True, reset_request=None):
        """See ``FrameProcessor.push``; also rejects the stamp of a frame already pushed.

        Raises:
            Whatever the stream, ``finish_frame`` or ``on_frame`` raise, after resetting the stream.
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
            frame = read_frame(image, info, settings.node.max_input_pixels)
        except ConversionError as error:
            return str(error)
        self._frames[stamp] = (key, frame, sparse)
        self._last_stamp_ns = stamp
        self._finish(self.stream.push, (frame.rgb, stamp), settings, on_frame, want_points)
        return None

    def flush(self, settings: FrameSettings, on_frame: OnFrame, want_points: bool = True) -> None:
        """Run the frames waiting for their group (``StreamingVideoDepth.flush``), finished as ``push`` does."""
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

    def refusal(self, settings: NodeSettings, current: NodeSettings) -> str | None:
        fixed = [name for name in self.FIXED if getattr(settings, name) != getattr(current, name)]
        return f"{', '.join(fixed)} cannot change in video mode (fixed when the node starts)" if fixed else None

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        return self.model.dit.input_size, self.model.dit.input_size

    def notes(self) -> dict[str, str]:
        stream = self.stream
        return {"video streaming": stream.mode, "video frames per window": str(stream.frames_per_window),
                "video keyframe every": str(stream.keyframe_every), "video max scale jump": str(stream.max_scale_jump),
                "video resets": str(self.resets), "video reanchors": str(stream.reanchors),
                "frames not predicted": str(self.dropped + self.pending)}

    def status(self) -> dict[str, Any]:
        return {"mode": "video", "video_streaming": self.stream.mode, "video_cache_state": self.stream.cache.state,
                "video_references": len(self.stream.cache.entries), "video_reanchors": self.stream.reanchors,
                "video_resets": self.resets}

    def _finish(self, run: Callable, args: tuple, settings: FrameSettings, on_frame: OnFrame,
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
                key, frame, sparse = self._frames.pop(out_stamp)
                prediction = DepthPrediction(depth=depth, processing_depth=depth, timings_ms=share)
                on_frame(key, finish_frame(frame, prediction, settings, sparse, want_points))
        except Exception:
            self.reset("finishing a frame failed", "error")  # the frames left of this push would never be done
            raise


def video_stream(model, settings: NodeSettings) -> StreamingVideoDepth:
    """A fresh stream of the PPVD ``model`` with the video_* parameters of ``settings``."""
    return StreamingVideoDepth(model, frames_per_window=settings.video_frames_per_window,
                               keyframe_every=settings.video_keyframe_every,
                               max_scale_jump=settings.video_max_scale_jump, mode=settings.video_streaming)


def make_processor(loaded: LoadedModel, settings: NodeSettings,
                   on_reset: Callable[[str, str], None] | None = None) -> FrameProcessor:
    """The processor of the loaded model's mode (``on_reset``: see ``VideoProcessor``); in image mode the
    model draws ``settings.uncertainty_samples`` samples per frame (``check_settings`` refuses more than
    one in video mode)."""
    if not loaded.request.video:
        loaded.model.samples = settings.uncertainty_samples
        return ImageProcessor(loaded.model)
    return VideoProcessor(video_stream(loaded.model, settings), on_reset)
