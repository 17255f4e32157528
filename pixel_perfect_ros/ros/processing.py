"""The depth node's per-frame path without a node, shared by ``depth_node`` and ``ppd-bag-eval``.

Image message -> RGB (``read_frame``) -> [model] -> reference alignment -> decoding -> flying-pixel filter ->
uncertainty filter -> the depth Image, CameraInfo, PointCloud2 and (with several samples) uncertainty Image
the node publishes (``finish_frame``). ROS message types
only (no rclpy node). The model step belongs to the mode (``processors``: PPD per image, or the PPVD
stream), which calls these two functions around it.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from ..geometry.decoding import DepthDecoder, ReferenceAlignedDecoder, decoder_parameter_names, make_decoder
from ..geometry.filters import flying_pixel_mask
from ..geometry.projection import pixel_intrinsics, scale_intrinsics
from ..geometry.uncertainty import published_uncertainty, sample_spread, uncertain_mask
from ..inference.pipeline import DepthPrediction
from .conversions import (
    ConversionError,
    aspect_ratios_differ,
    camera_info_to_intrinsics,
    depth_to_image,
    float_image,
    header_stamp_ns,
    image_to_array,
    image_to_depth,
    message_to_rgb8,
    nonfinite_pixels,
    pinhole_camera_info,
    scaled_camera_info,
)
from .parameters import NodeSettings
from .pointcloud import point_cloud


@dataclass(frozen=True)
class FrameSettings:
    """The settings a frame runs with and the depth decoder they make (it may keep a running fit across
    frames); replaced as a whole when a parameter changes.

    Attributes:
        node: the node's parameter values.
        decoder: the depth decoder of ``node``'s depth_mode and its parameters.
    """

    node: NodeSettings
    decoder: DepthDecoder

    @classmethod
    def of(cls, node: NodeSettings, previous: "FrameSettings | None" = None) -> "FrameSettings":
        """The settings ``node`` with ``previous``' decoder (and so its running fit) when neither the
        depth_mode nor a parameter of its decoder changed, else a fresh decoder."""
        names = decoder_parameter_names(node.depth_mode)
        if previous is not None and previous.node.depth_mode == node.depth_mode and all(
                getattr(previous.node, name) == getattr(node, name) for name in names):
            return cls(node=node, decoder=previous.decoder)
        return cls(node=node, decoder=make_decoder(node.depth_mode, **{name: getattr(node, name) for name in names}))


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
        uncertainty: (h, w) float32 ``geometry.uncertainty.published_uncertainty`` of the samples the
            prediction had (metres if ``is_metric``, else relative to the depth; NaN exactly where
            ``depth_msg`` is invalid, +inf where some samples decode invalid and others not), or None
            without samples (uncertainty_samples 1, video mode).
        uncertainty_msg: the ``depth/uncertainty`` message (32FC1, ``depth_msg``'s header and size), or None.
        uncertainty_samples: how many samples ``uncertainty`` was computed from (0 without).
        uncertain_pixels_removed: pixels set to NaN by the uncertainty filter (uncertainty_threshold).
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
    uncertainty: np.ndarray | None = None
    uncertainty_msg: Image | None = None
    uncertainty_samples: int = 0
    uncertain_pixels_removed: int = 0


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


def read_frame(image: Image | CompressedImage, info: CameraInfo | None, max_pixels: int) -> ReadFrame:
    """Messages -> arrays: the image's RGB and, with ``info``, its intrinsics at the image size.

    Args:
        image: the camera image (``message_to_rgb8``).
        info: its CameraInfo, or None.
        max_pixels: largest width x height accepted (max_input_pixels), pixels; checked before decoding.

    Raises:
        ConversionError: for an image or CameraInfo that cannot be read, or an image above ``max_pixels``
            (the frame is unusable).
    """
    start = time.perf_counter()
    rgb = message_to_rgb8(image, max_pixels)
    height, width = rgb.shape[:2]
    K = P = None
    if info is not None:
        K, P = camera_info_to_intrinsics(info, width, height)
    nonfinite = 0
    if isinstance(image, Image) and image.encoding == "32FC1":
        nonfinite = nonfinite_pixels(image_to_array(image))
    return ReadFrame(image=image, info=info, rgb=rgb, K=K, P=P, nonfinite_pixels=nonfinite,
                     decode_ms=(time.perf_counter() - start) * 1e3)


def finish_frame(frame: ReadFrame, prediction: DepthPrediction, settings: FrameSettings,
             sparse: Image | None = None, want_points: bool = True) -> ProcessedFrame:
    """The post-model path of one frame, shared by image and video mode: intrinsics, reference
    alignment, decoding, flying-pixel filter, uncertainty and its filter, and the output messages (with
    the frame's header).

    With samples (``prediction.samples`` / ``processing_samples``, as ``depth`` / ``processing_depth`` by
    output_resolution): their spread is ``sample_spread`` with the frame's decoder after its update (each
    sample decoded as the mean is); after the flying-pixel filter, with uncertainty_threshold > 0, the
    pixels whose relative spread is above it become NaN (``uncertain_mask``); the published uncertainty
    is computed on the final depth.

    Args:
        frame: the frame as ``read_frame`` gave it.
        prediction: the model's normalised log-depth of ``frame.rgb`` (``depth`` at the image size;
            ``processing_depth`` and ``metric_reference`` as the modes in use need them), its
            ``timings_ms`` (preprocess, semantics, sampling, postprocess) and, when it drew several,
            its ``samples`` (N, H, W) and ``processing_samples`` (N, h, w) (None or absent: one sample).
        settings: the node settings and depth decoder (its state is updated, if it keeps one).
        sparse: the sensor depth (REP 118 Image) for this frame in depth_mode sparse_topic; None = none.
        want_points: whether to build the point cloud (also needs publish_points).
    """
    node = settings.node
    start = time.perf_counter()
    rgb, info, K, P = frame.rgb, frame.info, frame.K, frame.P
    height, width = rgb.shape[:2]
    decoder = settings.decoder
    # 1. Intrinsics, reference alignment, decoding, flying-pixel filter.
    if info is None:  # intrinsics_source moge2: an ideal pinhole camera with MoGe-2's intrinsics
        K = pixel_intrinsics(prediction.metric_reference.intrinsics, width, height)
        info = pinhole_camera_info(K, width, height, frame.image.header)
        P = np.asarray(info.p).reshape(3, 4)
    sparse_error = ""
    if isinstance(decoder, ReferenceAlignedDecoder):
        n, reference, sparse_error = _reference(decoder.mode, prediction, sparse)
        decoder.update(n, reference)
    at_input = node.output_resolution == "input"
    normalised = prediction.depth if at_input else prediction.processing_depth
    samples = getattr(prediction, "samples" if at_input else "processing_samples", None)
    depth = decoder(normalised)
    spread = sample_spread(decoder, samples) if samples is not None else None
    flying = uncertain = 0
    if node.flying_pixel_threshold > 0:
        mask = flying_pixel_mask(depth, node.flying_pixel_threshold)
        depth[mask], flying = np.nan, int(mask.sum())
    if spread is not None and node.uncertainty_threshold > 0:
        mask = uncertain_mask(spread, depth, node.uncertainty_threshold)
        depth[mask], uncertain = np.nan, int(mask.sum())
    out_h, out_w = depth.shape
    K_out, P_out = scale_intrinsics(K, P, out_w / width, out_h / height)
    postprocessed = time.perf_counter()

    # 2. Output messages, all with the source image's header.
    header = frame.image.header
    depth_msg = depth_to_image(depth, header, node.output_encoding)
    uncertainty = uncertainty_msg = None
    if spread is not None:
        uncertainty = published_uncertainty(spread, depth, decoder.is_metric)
        if node.output_encoding == "16UC1":  # NaN also where the depth rounds to 0 mm or beyond 16 bits
            uncertainty[image_to_array(depth_msg) == 0] = np.nan
        uncertainty_msg = float_image(uncertainty, header)  # inf kept: samples disagree on validity
    info_msg = scaled_camera_info(info, K_out, P_out, out_w, out_h, header)
    points_msg = None
    if node.publish_points and want_points:
        colours = None
        if node.points_xyzrgb:
            colours = rgb if (out_h, out_w) == (height, width) else cv2.resize(
                rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
        points_msg = point_cloud(depth, P_out, header, colours, node.points_decimation)
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
        sparse_error=sparse_error, uncertainty=uncertainty, uncertainty_msg=uncertainty_msg,
        uncertainty_samples=0 if samples is None else len(samples), uncertain_pixels_removed=uncertain,
    )


def _reference(mode: str, prediction: DepthPrediction, sparse: Image | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(normalised depth, metric reference depth in metres, why ``sparse`` is unusable or '') for a
    reference-aligned decoder; a (1, 1) NaN reference when there is none. A sparse depth of another
    aspect ratio than the image (beyond ``ASPECT_TOLERANCE``) is unusable: fitting it would stretch it
    over the image (``sample_reference`` maps it to the image by relative position)."""
    if mode == "moge2":
        return prediction.processing_depth, prediction.metric_reference.depth, ""  # inf outside MoGe-2's mask
    no_reference = np.full((1, 1), np.nan, np.float32)
    if sparse is None:
        return prediction.depth, no_reference, ""
    try:
        reference = image_to_depth(sparse)
    except ConversionError as error:
        return prediction.depth, no_reference, str(error)
    (height, width), (sparse_h, sparse_w) = prediction.depth.shape, reference.shape
    if aspect_ratios_differ(width, height, sparse_w, sparse_h):
        return prediction.depth, no_reference, (f"aspect ratios differ: sparse_depth is {sparse_w}x{sparse_h}, "
                                                f"the image is {width}x{height}")
    return prediction.depth, reference, ""
