"""rosbag2 input and output for evaluation: camera frames with their ground truth, and recorded outputs.

Reading (:func:`camera_frames`): a rosbag2 directory (sqlite3 or MCAP, through ``rosbags``) gives, per
image, the CameraInfo, ground-truth depth, sensor depth and pose of the same stamp (within a
tolerance), read in one pass with a small look-ahead. Images and depth are rclpy messages (what the
node's processing takes); poses are read with ``rosbags``' own types (PoseStamped, TransformStamped or
tf2_msgs/TFMessage for one frame pair), so no tf2 package is needed.

Writing (:class:`BagRecorder`): rclpy messages, serialised to CDR, written raw with ``rosbags``; the
message definitions come from ``rosbags``' ROS 2 Kilted typestore plus this package's installed msg/.
"""
from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..geometry.poses import position_quaternion_to_pose
from .conversions import ConversionError, header_stamp_ns, image_to_depth

IMAGE_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}
DEPTH_TYPES = {"sensor_msgs/msg/Image": Image}
INFO_TYPES = {"sensor_msgs/msg/CameraInfo": CameraInfo}
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/TransformStamped", "tf2_msgs/msg/TFMessage")
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
PACKAGE_MSGS = ("DepthStatus",)
"""This package's message types, registered in the recorder's typestore from their installed .msg files."""


class BagError(RuntimeError):
    """A bag cannot be used as asked; the message says why and what to do."""


def installed_share_file(relative: str) -> Path:
    """A file of this package's ``share/pixel_perfect_ros/`` as installed: under a colcon prefix on
    ``AMENT_PREFIX_PATH``, or in the virtual environment (``make venv`` installs it there).

    Raises:
        FileNotFoundError: with the prefixes searched and how to build the package.
    """
    prefixes = [*filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)), sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / "pixel_perfect_ros" / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"{relative} is not installed under {', '.join(prefixes)}: build the package "
                            "(make venv, or colcon build and source install/setup.bash)")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CameraTopics:
    """Topics of a camera bag. ``image`` is required; the others are optional (None = absent).

    pose: a PoseStamped or TransformStamped topic, or a tf topic (``/tf``) with ``pose_frames``.
    pose_frames: (parent, child) frame ids of the transform to take from a tf topic.
    """

    image: str
    camera_info: str | None = None
    depth: str | None = None
    sparse: str | None = None
    pose: str | None = None
    pose_frames: tuple[str, str] | None = None


@dataclass
class BagFrame:
    """One image and what was matched to it by stamp (None = nothing within the tolerance).

    gt_depth: (Hd, Wd) float32 metres, NaN = invalid, from 32FC1 (m) or 16UC1 (mm, 0 = invalid).
    pose: (4, 4) float64 ``T_parent_from_camera``, metres.
    """

    stamp_ns: int
    image: Image | CompressedImage
    camera_info: CameraInfo | None = None
    gt_depth: np.ndarray | None = None
    sparse: Image | None = None
    pose: np.ndarray | None = None


@dataclass
class _Stream:
    """Recent stamped items of one auxiliary topic, and the newest stamp seen on it."""

    items: deque = field(default_factory=lambda: deque(maxlen=64))
    newest_ns: int = -1


def _pose_items(msgtype: str, msg, frames: tuple[str, str] | None) -> list[tuple[int, np.ndarray]]:
    """(stamp ns, T) items of a rosbags pose message; tf messages give only the ``frames`` transform."""
    if msgtype == "geometry_msgs/msg/PoseStamped":
        p, q = msg.pose.position, msg.pose.orientation
        return [(header_stamp_ns(msg.header), position_quaternion_to_pose((p.x, p.y, p.z), (q.w, q.x, q.y, q.z)))]
    transforms = msg.transforms if msgtype == "tf2_msgs/msg/TFMessage" else [msg]
    items = []
    for t in transforms:
        if msgtype == "tf2_msgs/msg/TFMessage" and (t.header.frame_id, t.child_frame_id) != frames:
            continue
        p, q = t.transform.translation, t.transform.rotation
        items.append((header_stamp_ns(t.header), position_quaternion_to_pose((p.x, p.y, p.z), (q.w, q.x, q.y, q.z))))
    return items


def _check_topics(reader: Reader, topics: CameraTopics) -> dict[str, str]:
    """Topic -> message type of the wanted topics; BagError naming what is missing or mistyped."""
    available = {c.topic: c.msgtype for c in reader.connections}
    wanted = {"image": (topics.image, IMAGE_TYPES), "camera_info": (topics.camera_info, INFO_TYPES),
              "depth": (topics.depth, DEPTH_TYPES), "sparse": (topics.sparse, DEPTH_TYPES),
              "pose": (topics.pose, POSE_TYPES)}
    types = {}
    for role, (topic, allowed) in wanted.items():
        if topic is None:
            continue
        if topic not in available:
            listing = "\n".join(f"  {t}  [{m}]" for t, m in sorted(available.items()))
            raise BagError(f"{reader.path}: no topic {topic!r} ({role}); the bag has:\n{listing}")
        if available[topic] not in allowed:
            raise BagError(f"{reader.path}: topic {topic!r} ({role}) is {available[topic]}, expected "
                           f"{' or '.join(allowed)}")
        types[topic] = available[topic]
    if topics.pose is not None and types[topics.pose] == "tf2_msgs/msg/TFMessage" and topics.pose_frames is None:
        raise BagError(f"{topics.pose} is a tf topic: name the transform's parent and child frames")
    return types


def _nearest(stream: _Stream, stamp_ns: int, tolerance_ns: int):
    """The item of ``stream`` nearest in stamp to ``stamp_ns`` within the tolerance, or None."""
    best = min(stream.items, key=lambda item: abs(item[0] - stamp_ns), default=None)
    return None if best is None or abs(best[0] - stamp_ns) > tolerance_ns else best[1]


def bag_extent(path: str | Path, topic: str) -> tuple[int, int]:
    """(start time ns, messages on ``topic``) from a bag's metadata, without reading messages.

    Raises:
        BagError: the bag cannot be read.
    """
    try:
        with Reader(path) as reader:
            return reader.start_time, sum(c.msgcount for c in reader.connections if c.topic == topic)
    except (ReaderError, OSError, KeyError, ValueError) as error:
        raise BagError(f"cannot read the bag {path}: {error}") from error


def camera_frames(path: str | Path, topics: CameraTopics, tolerance_ns: int = 5_000_000,
                  start_ns: int | None = None, end_ns: int | None = None, stride: int = 1) -> Iterator[BagFrame]:
    """The images of a bag with their matched CameraInfo, depths and pose, in bag order.

    An image is matched once every auxiliary topic has gone past its stamp by more than the tolerance
    (or the bag ends): topics need not be ordered with each other, only roughly in time.

    Args:
        path: rosbag2 directory.
        topics: which topics to read.
        tolerance_ns: largest stamp difference of a match, nanoseconds.
        start_ns, end_ns: keep images with header stamps in [start_ns, end_ns] (None = no bound).
        stride: keep every ``stride``-th of those images.

    Yields:
        :class:`BagFrame` per kept image.

    Raises:
        BagError: unreadable or corrupt bag, a missing or mistyped topic, or a depth image that is not
            32FC1 / 16UC1 (raised when reached: frames before it have been yielded).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    try:
        with Reader(path) as reader:
            types = _check_topics(reader, topics)
            typestore = get_typestore(Stores.ROS2_KILTED)
            aux = {topic: _Stream() for role, topic in vars(topics).items()
                   if role not in ("image", "pose_frames") and topic is not None}
            pending: deque[tuple[int, object]] = deque()
            index = 0
            connections = [c for c in reader.connections if c.topic in types]
            for connection, _, raw in reader.messages(connections=connections):
                topic, msgtype = connection.topic, types[connection.topic]
                if topic == topics.image:
                    msg = deserialize_message(raw, IMAGE_TYPES[msgtype])
                    stamp = header_stamp_ns(msg.header)
                    if (start_ns is None or stamp >= start_ns) and (end_ns is None or stamp <= end_ns):
                        if index % stride == 0:
                            pending.append((stamp, msg))
                        index += 1
                else:
                    items = (_pose_items(msgtype, typestore.deserialize_cdr(raw, msgtype), topics.pose_frames)
                             if topic == topics.pose else
                             [(header_stamp_ns(m.header), m) for m in [deserialize_message(
                                 raw, {**INFO_TYPES, **DEPTH_TYPES}[msgtype])]])
                    for stamp, item in items:
                        aux[topic].items.append((stamp, item))
                        aux[topic].newest_ns = max(aux[topic].newest_ns, stamp)
                while pending and all(s.newest_ns > pending[0][0] + tolerance_ns for s in aux.values()):
                    yield _match(*pending.popleft(), topics, aux, tolerance_ns)
            while pending:
                yield _match(*pending.popleft(), topics, aux, tolerance_ns)
    except (ReaderError, OSError, KeyError, ValueError) as error:
        raise BagError(f"cannot read the bag {path}: {error}") from error


def _match(stamp_ns: int, image, topics: CameraTopics, aux: dict[str, _Stream], tolerance_ns: int) -> BagFrame:
    frame = BagFrame(stamp_ns=stamp_ns, image=image)
    if topics.camera_info:
        frame.camera_info = _nearest(aux[topics.camera_info], stamp_ns, tolerance_ns)
    if topics.sparse:
        frame.sparse = _nearest(aux[topics.sparse], stamp_ns, tolerance_ns)
    if topics.pose:
        frame.pose = _nearest(aux[topics.pose], stamp_ns, tolerance_ns)
    if topics.depth:
        depth = _nearest(aux[topics.depth], stamp_ns, tolerance_ns)
        if depth is not None:
            try:
                frame.gt_depth = image_to_depth(depth)
            except ConversionError as error:
                raise BagError(f"ground-truth depth on {topics.depth}: {error}") from error
    return frame


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------

def _type_name(msg) -> str:
    """ROS 2 type name of an rclpy message, e.g. ``sensor_msgs/msg/Image``."""
    return f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"


class BagRecorder:
    """A new rosbag2 of rclpy messages; use as a context manager so it is closed (and valid) whatever
    happens, Ctrl-C included.

    Args:
        path: bag directory to create (must not exist).
        storage: ``sqlite3`` or ``mcap``.
    """

    def __init__(self, path: str | Path, storage: str = "sqlite3"):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {tuple(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        try:
            self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        except WriterError as error:
            raise BagError(f"cannot create the bag {self.path}: {error}") from error
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        for name in PACKAGE_MSGS:
            definition = installed_share_file(f"msg/{name}.msg").read_text()
            self._typestore.register(get_types_from_msg(definition, f"pixel_perfect_ros/msg/{name}"))
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "BagRecorder":
        try:
            self._writer.open()
        except WriterError as error:
            raise BagError(f"cannot create the bag {self.path}: {error}") from error
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write(self, topic: str, msg, time_ns: int) -> None:
        """Append ``msg`` (an rclpy message) on ``topic`` at bag time ``time_ns`` (nanoseconds)."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, _type_name(msg), typestore=self._typestore)
        self._writer.write(self._connections[topic], int(time_ns), serialize_message(msg))
        self.counts[topic] = self.counts.get(topic, 0) + 1
