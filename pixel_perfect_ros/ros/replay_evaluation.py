"""A replay's recorded outputs scored against its source bag: each published frame whose outputs arrived,
with the source's RGB, ground truth and pose (``evaluation/sequence.py``)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pixel_perfect_ros.msg import DepthStatus

from ..evaluation.sequence import Evaluation
from .bag_io import BagFrame, CameraTopics, camera_frames
from .conversions import camera_info_to_intrinsics, image_to_depth, message_to_rgb8
from .replayer import ReplayOptions, ReplayResult, topic_name

NODE_STAGES = tuple(name for name in DepthStatus.get_fields_and_field_types()
                    if name.endswith("_ms") and name not in ("total_ms", "age_ms"))
"""DepthStatus fields timing the node's stages per frame, ms (``Evaluation`` sums them to ``total_ms``)."""


def _by_stamp(sources: Iterable[BagFrame], outputs: Iterable[BagFrame]) -> Iterator[tuple[BagFrame, BagFrame | None]]:
    """Each source frame with the output frame of the same stamp, or None. Both streams come roughly in
    stamp order (outputs strictly: a bag read in bag time); outputs read ahead wait in a dict."""
    outputs = iter(outputs)
    ahead: dict[int, BagFrame] = {}
    newest = -1
    for source in sources:
        while newest < source.stamp_ns:
            output = next(outputs, None)
            if output is None:
                break
            ahead[output.stamp_ns] = output
            newest = output.stamp_ns
        yield source, ahead.pop(source.stamp_ns, None)


def evaluate(bag: Path, topics: CameraTopics, depth_bag: Path, result: ReplayResult, options: ReplayOptions,
             title: str) -> Evaluation:
    """Score every published frame whose outputs arrived: the source's RGB, ground truth (if the bag has it)
    and pose against the recorded depth/image, with K from depth/camera_info and is_metric and stage
    timings from depth/status.

    Raises:
        BagError: either bag unreadable.
    """
    evaluation = Evaluation(title)
    if not result.statuses:
        return evaluation
    published = set(result.published)
    outputs = camera_frames(depth_bag, CameraTopics(image=topic_name(options.namespace, "depth/image"),
                                                    camera_info=topic_name(options.namespace, "depth/camera_info")),
                            tolerance_ns=0)
    for source, output in _by_stamp(camera_frames(bag, topics, options.tolerance_ns), outputs):
        status = result.statuses.get(source.stamp_ns)
        if source.stamp_ns not in published or output is None or output.camera_info is None or status is None:
            continue
        image = source.image
        rgb = message_to_rgb8(image)
        depth = image_to_depth(output.image)  # (h, w) metres or relative units
        K, _ = camera_info_to_intrinsics(output.camera_info, depth.shape[1], depth.shape[0])
        evaluation.add(source.stamp_ns, rgb, source.gt_depth, K, depth, status.is_metric, source.pose,
                       {name: getattr(status, name) for name in NODE_STAGES})
    return evaluation


