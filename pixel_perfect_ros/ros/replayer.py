"""Camera frames published into depth_node's inputs over DDS and its outputs recorded to a bag, on the
bag's stamp timing scaled by a rate or paced (each frame once the previous one's outputs have arrived);
what the replay measured (frames lost on the way, end-to-end latency) and its report lines.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from pixel_perfect_ros.msg import DepthStatus

from .bag_io import BagFrame, BagRecorder
from .conversions import header_stamp_ns

if TYPE_CHECKING:
    from .node_process import NodeProcess

OUTPUTS = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2,
           "depth/status": DepthStatus}
"""The node's outputs that are recorded, relative to its namespace."""
FRAME_OUTPUTS = ("depth/image", "depth/camera_info", "depth/status")
"""Outputs every processed frame has (depth/points only while the node's publish_points is on)."""
INPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
OUTPUT_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
"""Reliable (the node publishes reliable), deep enough that a slow bag write loses nothing."""
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
CLOCK_PERIOD_S = 1.0 / 40.0
"""/clock period between frames in real-time mode (``ros2 bag play --clock``'s default 40 Hz)."""
SPIN_S = 0.005
"""Longest wait of one executor turn, seconds: how late a frame may be published."""
QUIET_S = 0.5
"""After the last frame's outputs, recording stops once no output has arrived for this long, seconds."""
PROGRESS_S = 5.0
"""Real-time mode prints progress this often, seconds."""


class ReplayError(RuntimeError):
    """The replay cannot go on (the node exited, never appeared, or timed out); the message says why."""


def topic_name(namespace: str, name: str) -> str:
    """``name`` in ``namespace`` ("" or "/name"), absolute: ``/name/depth/image``."""
    return f"{namespace}/{name}"


class Replayer(Node):
    """Publishes camera frames into depth_node's inputs and records its outputs (``OUTPUTS``) to a bag.

    Times are ``time.monotonic()`` seconds; stamps are header stamps in nanoseconds.

    Args:
        context: the rclpy context.
        recorder: the open bag the outputs go to, at bag time = header stamp.
        namespace: the node's namespace, "" or "/name".
        compressed: publish sensor_msgs/CompressedImage on ``image/compressed`` instead of Image on ``image``.
        clock: also publish rosgraph_msgs/Clock on ``/clock``.
    """

    def __init__(self, context: rclpy.Context, recorder: BagRecorder, namespace: str, compressed: bool, clock: bool):
        super().__init__("ppd_bag_replay", context=context)
        image = ("image/compressed", CompressedImage) if compressed else ("image", Image)
        self.inputs = {name: self.create_publisher(msg_type, topic_name(namespace, name), INPUT_QOS)
                       for name, msg_type in (image, ("camera_info", CameraInfo), ("sparse_depth", Image))}
        self._image_input = image[0]
        self._clock = self.create_publisher(Clock, "/clock", CLOCK_QOS) if clock else None
        self._clock_ns = -1  # last /clock published, ns
        self._recorder = recorder
        self._outputs = []
        for name, msg_type in OUTPUTS.items():
            topic = topic_name(namespace, name)
            self._outputs.append(self.create_subscription(msg_type, topic, partial(self._record, name, topic), OUTPUT_QOS))
        self.published: list[int] = []  # stamps in publish order
        self.published_s: dict[int, float] = {}  # when each image was published
        self.received: dict[str, set[int]] = {name: set() for name in OUTPUTS}
        self.image_received_s: dict[int, float] = {}  # when each depth/image arrived
        self.statuses: dict[int, DepthStatus] = {}
        self.last_activity_s = time.monotonic()  # last publication or output

    def _record(self, name: str, topic: str, msg) -> None:
        now = time.monotonic()
        stamp = header_stamp_ns(msg.header)
        self._recorder.write(topic, msg, stamp)
        self.received[name].add(stamp)
        if name == "depth/image":
            self.image_received_s.setdefault(stamp, now)
        elif name == "depth/status":
            self.statuses[stamp] = msg
        self.last_activity_s = now

    def missing(self) -> list[str]:
        """What the node has not matched yet: inputs without a subscriber, outputs without a publisher."""
        return ([f"a subscriber on {p.topic_name}" for p in self.inputs.values() if p.get_subscription_count() == 0]
                + [f"a publisher of {s.topic_name}" for s in self._outputs if s.get_publisher_count() == 0])

    def publish_clock(self, time_ns: int) -> None:
        """Publish ``/clock`` at ``time_ns`` (bag time, ns; never backwards) when the clock is on."""
        if self._clock is not None and time_ns > self._clock_ns:
            self._clock_ns = time_ns
            self._clock.publish(Clock(clock=Time(nanoseconds=time_ns).to_msg()))

    def publish(self, frame: BagFrame) -> None:
        """Publish ``/clock`` at the frame's stamp, its sparse depth and CameraInfo when it has them, then the image."""
        self.publish_clock(frame.stamp_ns)
        if frame.sparse is not None:
            self.inputs["sparse_depth"].publish(frame.sparse)
        if frame.camera_info is not None:
            self.inputs["camera_info"].publish(frame.camera_info)
        self.published.append(frame.stamp_ns)
        self.last_activity_s = self.published_s[frame.stamp_ns] = time.monotonic()
        self.inputs[self._image_input].publish(frame.image)

    def frame_done(self, stamp_ns: int) -> bool:
        """Whether every output of ``FRAME_OUTPUTS`` of the frame stamped ``stamp_ns`` has arrived."""
        return all(stamp_ns in self.received[name] for name in FRAME_OUTPUTS)


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay (the command-line options of the same names).

    namespace: the node's namespace, "" or "/name". rate: bag time per wall time (real-time mode).
    paced: publish each frame once the previous one's outputs arrived (``rate`` unused). clock: publish
    /clock. timeout_s: longest wait for the node, for a paced frame's outputs, and for outputs after the
    last frame, seconds. tolerance_ns: largest stamp difference of CameraInfo etc. matched to an image.
    """

    namespace: str = ""
    rate: float = 1.0
    paced: bool = False
    clock: bool = False
    timeout_s: float = 60.0
    tolerance_ns: int = 5_000_000


@dataclass
class ReplayResult:
    """What a replay measured. Stamps are header stamps, nanoseconds.

    published: stamps in publish order. latency_ms: per frame whose depth/image arrived, ms from
    publishing its image to receiving its depth/image. statuses: DepthStatus per stamp. publish_span_s:
    wall time from the first to the last image published. recorded: messages written per output topic.
    complete: False when Ctrl-C or SIGTERM cut the replay short.
    """

    published: list[int]
    latency_ms: dict[int, float]
    statuses: dict[int, DepthStatus]
    publish_span_s: float
    recorded: dict[str, int]
    complete: bool

    @property
    def received(self) -> int:
        """Published frames whose depth/image arrived."""
        return sum(stamp in self.latency_ms for stamp in self.published)

    @property
    def dropped(self) -> int:
        """Published frames without a depth/image."""
        return len(self.published) - self.received

    def stats(self) -> dict:
        """The counts, latency percentiles (ms), spans (s) and the node's last status counters, as numbers."""
        latency = np.array([self.latency_ms[s] for s in self.published if s in self.latency_ms])
        last = self.statuses[max(self.statuses)] if self.statuses else None
        return {
            "complete": self.complete,
            "frames_published": len(self.published), "frames_received": self.received, "frames_dropped": self.dropped,
            "latency_ms": {"median": float(np.median(latency)), "p95": float(np.percentile(latency, 95)),
                           "max": float(latency.max())} if latency.size else None,
            "publish_span_s": self.publish_span_s,
            "bag_span_s": (self.published[-1] - self.published[0]) * 1e-9 if self.published else 0.0,
            "node_frames_dropped": int(last.frames_dropped) if last else None,
            "node_frames_rejected": int(last.frames_rejected) if last else None,
            "model_id": last.model_id if last else None,
            "recorded": self.recorded,
            "frames": [{"stamp_ns": s, "latency_ms": self.latency_ms.get(s)} for s in self.published],
        }


def replay_notes(stats: dict, options: ReplayOptions) -> dict[str, str]:
    """The report's lines about the replay, from :meth:`ReplayResult.stats`."""
    mode = "paced (each frame after the previous one's outputs)" if options.paced else f"real time x{options.rate:g}"
    published, dropped, latency = stats["frames_published"], stats["frames_dropped"], stats["latency_ms"]
    return {
        "replay": mode + (", /clock in bag time" if options.clock else "")
                  + ("" if stats["complete"] else "; INTERRUPTED (Ctrl-C or SIGTERM)"),
        "frames published": f"{published} in {stats['publish_span_s']:.2f} s (bag time {stats['bag_span_s']:.2f} s)",
        "outputs received": f"{stats['frames_received']} depth images; recorded: "
                            + ", ".join(f"{topic} {n}" for topic, n in stats["recorded"].items()),
        "frames dropped": f"{dropped} ({100.0 * dropped / max(published, 1):.1f} %)"
                          + ("" if stats["complete"] else "; frames in flight at the interruption count as dropped"),
        "end-to-end latency (publish -> depth/image received)":
            f"median {latency['median']:.0f} ms, p95 {latency['p95']:.0f} ms, max {latency['max']:.0f} ms"
            if latency else "no outputs",
        "node-reported frames_dropped / frames_rejected (since the node started)":
            f"{stats['node_frames_dropped']} / {stats['node_frames_rejected']}" if stats["model_id"] else "no status",
        "model": stats["model_id"] or "unknown (no depth/status received)",
    }


class Replay:
    """One replay over DDS: the rclpy context, the :class:`Replayer`, the node process when started here,
    and the stop flag; use as a context manager (shuts the context down).

    Args:
        recorder: the open output bag.
        options: how to replay.
        compressed: whether the images are CompressedImage.
        node: the node process started here, or None (a running node).
        stop: set on Ctrl-C or SIGTERM: publishing and waiting end at once.
    """

    def __init__(self, recorder: BagRecorder, options: ReplayOptions, compressed: bool, node: NodeProcess | None,
                 stop: threading.Event):
        self.options, self.node, self.stop = options, node, stop
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)  # own context: no signal handlers of rclpy's
        self.executor = SingleThreadedExecutor(context=self.context)
        self.replayer = Replayer(self.context, recorder, options.namespace, compressed, options.clock)
        self.executor.add_node(self.replayer)
        self._start: tuple[float, int] | None = None  # (time, stamp ns) of the first frame, real-time mode
        self._next_clock_s = 0.0

    def __enter__(self) -> "Replay":
        return self

    def __exit__(self, *exc) -> None:
        self.replayer.destroy_node()
        self.executor.shutdown()
        self.context.try_shutdown()

    def spin_until(self, done: Callable[[], bool], deadline_s: float | None = None) -> bool:
        """Run callbacks (and the real-time /clock) until ``done()``; False at ``deadline_s``
        (``time.monotonic()``) or on Ctrl-C. Raises ReplayError if the node started here exits."""
        while not done():
            now = time.monotonic()
            if self.stop.is_set() or (deadline_s is not None and now >= deadline_s):
                return False
            if self.node is not None:
                self.node.check_running()
            if self._start is not None and now >= self._next_clock_s:
                self._next_clock_s = now + CLOCK_PERIOD_S
                self.replayer.publish_clock(self._bag_time_ns(now))
            self.executor.spin_once(timeout_sec=SPIN_S)
        return True

    def _bag_time_ns(self, now: float) -> int:
        start_s, start_ns = self._start
        return start_ns + round((now - start_s) * self.options.rate * 1e9)

    def connect(self) -> None:
        """Wait until the node subscribes to every input and publishes every output (saying what for)."""
        missing = self.replayer.missing()
        if missing:
            print(f"waiting up to {self.options.timeout_s:.0f} s for depth_node: {', '.join(missing)}", flush=True)
        if not self.spin_until(lambda: not self.replayer.missing(), time.monotonic() + self.options.timeout_s):
            if not self.stop.is_set():
                raise ReplayError(
                    f"no depth_node within {self.options.timeout_s:.0f} s: still no "
                    f"{', '.join(self.replayer.missing())}. "
                    "Start one (--start-node, or ros2 run pixel_perfect_ros depth_node) in --namespace, with "
                    "use_compressed:=true for a CompressedImage bag, on this ROS_DOMAIN_ID")

    def play(self, frames: Iterable[BagFrame], total: int) -> None:
        """Publish ``frames`` on their stamps' timing scaled by the rate, or paced; ends early on Ctrl-C."""
        progress_s = time.monotonic() + PROGRESS_S
        for i, frame in enumerate(frames, 1):
            if self.stop.is_set():
                return
            if self.options.paced:
                if not self._paced(frame, i, total):
                    return
                continue
            if self._start is None:
                self._start = (time.monotonic(), frame.stamp_ns)
            due_s = self._start[0] + (frame.stamp_ns - self._start[1]) * 1e-9 / self.options.rate
            if not self.spin_until(lambda: time.monotonic() >= due_s):
                return
            self.replayer.publish(frame)
            if time.monotonic() >= progress_s:
                progress_s += PROGRESS_S
                print(f"  published {i}/{total}, depth images received {len(self.replayer.image_received_s)}",
                      flush=True)

    def _paced(self, frame: BagFrame, index: int, total: int) -> bool:
        """Publish one frame and wait for its outputs; False on Ctrl-C."""
        self.replayer.publish(frame)
        done = self.spin_until(lambda: self.replayer.frame_done(frame.stamp_ns),
                               time.monotonic() + self.options.timeout_s)
        if self.stop.is_set():
            return False
        if done:
            r = self.replayer
            latency_ms = 1000.0 * (r.image_received_s[frame.stamp_ns] - r.published_s[frame.stamp_ns])
            print(f"  frame {index}/{total}: {latency_ms:.0f} ms", flush=True)
        else:
            print(f"  frame {index}/{total}: no outputs within {self.options.timeout_s:.0f} s (counted as dropped)",
                  flush=True)
        return True

    def drain(self) -> None:
        """Wait for the last frame's outputs (or until none has come for the timeout), then until outputs stop."""
        r = self.replayer
        if r.published:
            last = r.published[-1]
            self.spin_until(lambda: r.frame_done(last) or time.monotonic() - r.last_activity_s > self.options.timeout_s)
        self.spin_until(lambda: time.monotonic() - r.last_activity_s >= QUIET_S)

    def result(self, recorded: dict[str, int]) -> ReplayResult:
        """What was measured so far; ``recorded``: the recorder's message count per topic."""
        r = self.replayer
        latency_ms = {s: 1000.0 * (r.image_received_s[s] - r.published_s[s]) for s in r.published
                      if s in r.image_received_s}
        span_s = max(r.published_s.values()) - min(r.published_s.values()) if r.published_s else 0.0
        return ReplayResult(list(r.published), latency_ms, dict(r.statuses), span_s, dict(recorded),
                            complete=not self.stop.is_set())


