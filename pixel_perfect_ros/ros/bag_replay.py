"""``ppd-bag-replay``: a camera bag published into a running depth_node over DDS, its outputs recorded
and evaluated.

[1/3] check the bag's topics; start depth_node (``--start-node``) or wait for a running one. [2/3]
publish each image (Image or CompressedImage, as in the bag) with its CameraInfo and sparse depth into
the node's inputs, on the bag's header-stamp timing scaled by ``--rate`` (late frames go at once, none
is skipped; ``--clock`` also publishes ``/clock`` in bag time) or ``--paced`` (each frame once the
previous one's outputs have arrived), and record every output to ``OUT/depth_bag`` (bag time = header
stamp) until outputs stop. [3/3] pair the outputs with the source frames by stamp and write
``OUT/report/`` (``evaluation/sequence.py``: metrics.json, frames.csv, report.html; and replay.json):
accuracy where the bag has ground truth, and what offline evaluation cannot see: frames lost on the
way, end-to-end latency, stamps.

Exit status: 0 done, 1 the node failed or never appeared (or produced nothing), 2 bad arguments or
bag, 130 Ctrl-C (the bag is closed and valid, the report is marked incomplete).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from pixel_perfect_ros.msg import DepthStatus

from ..tools.cli import parameter_assignment, positive_float
from ..evaluation.sequence import Evaluation, headline_rows, write_json_atomic
from .bag_io import BagError, BagFrame, BagRecorder, CameraTopics, bag_extent, camera_frames, installed_share_file
from .conversions import camera_info_to_intrinsics, header_stamp_ns, image_to_depth, message_to_rgb8
from .parameters import SPECS

OUTPUTS = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2,
           "depth/status": DepthStatus}
"""The node's outputs that are recorded, relative to its namespace."""
FRAME_OUTPUTS = ("depth/image", "depth/camera_info", "depth/status")
"""Outputs every processed frame has (depth/points only while the node's publish_points is on)."""
NODE_STAGES = tuple(name for name in DepthStatus.get_fields_and_field_types()
                    if name.endswith("_ms") and name not in ("total_ms", "age_ms"))
"""DepthStatus fields timing the node's stages per frame, ms (``Evaluation`` sums them to ``total_ms``)."""
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
EXIT_TIMEOUT_S = 30.0
"""How long a node started here may take to exit after SIGINT, seconds."""


class ReplayError(RuntimeError):
    """The replay cannot go on (the node exited, never appeared, or timed out); the message says why."""


# --------------------------------------------------------------------------------------------------
# The node as a subprocess
# --------------------------------------------------------------------------------------------------

def parameter_text(name: str, value: object) -> str:
    """``NAME:=VALUE`` as on the ros2 command line (booleans written ``true``/``false``)."""
    return f"{name}:={str(value).lower() if isinstance(value, bool) else value}"


def node_command(parameters: dict[str, object], namespace: str = "") -> list[str]:
    """The depth_node command line in ``namespace`` ("" or "/name") with ``-p NAME:=VALUE`` per parameter."""
    command = [sys.executable, "-m", "pixel_perfect_ros.ros.depth_node", "--ros-args"]
    if namespace:
        command += ["-r", f"__ns:={namespace}"]
    for name, value in parameters.items():
        command += ["-p", parameter_text(name, value)]
    return command


class NodeProcess:
    """depth_node as a subprocess in its own session (a terminal's Ctrl-C reaches only this process, which
    then stops the node); its stderr lines are printed as ``  node: ...`` and the last kept."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True)
        self.tail: deque[str] = deque(maxlen=30)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.tail.append(line.rstrip())
            print(f"  node: {line.rstrip()}", flush=True)

    def check_running(self) -> None:
        """Raise ReplayError with the node's stderr tail if it has exited."""
        if self.process.poll() is not None:
            self._reader.join(timeout=5)
            raise ReplayError(f"the node exited (code {self.process.returncode}):\n" + "\n".join(self.tail))

    def stop(self) -> None:
        """SIGINT, then wait for a clean exit; ReplayError if it fails or hangs."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ReplayError(f"the node did not exit within {EXIT_TIMEOUT_S:.0f} s of SIGINT") from None
        if self.process.returncode != 0:
            self.check_running()

    def close(self) -> None:
        """Kill the node if it still runs; wait for it and the reader thread."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)


# --------------------------------------------------------------------------------------------------
# Publishing and recording over DDS
# --------------------------------------------------------------------------------------------------

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
    complete: False when Ctrl-C cut the replay short.
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
                  + ("" if stats["complete"] else "; INTERRUPTED (Ctrl-C)"),
        "frames published": f"{published} in {stats['publish_span_s']:.2f} s (bag time {stats['bag_span_s']:.2f} s)",
        "outputs received": f"{stats['frames_received']} depth images; recorded: "
                            + ", ".join(f"{topic} {n}" for topic, n in stats["recorded"].items()),
        "frames dropped": f"{dropped} ({100.0 * dropped / max(published, 1):.1f} %)"
                          + ("" if stats["complete"] else "; frames in flight at Ctrl-C count as dropped"),
        "end-to-end latency (publish -> depth/image received)":
            f"median {latency['median']:.0f} ms, p95 {latency['p95']:.0f} ms, max {latency['max']:.0f} ms"
            if latency else "no outputs",
        "node-reported frames_dropped / frames_rejected (since the node started)":
            f"{stats['node_frames_dropped']} / {stats['node_frames_rejected']}" if stats["model_id"] else "no status",
        "model": stats["model_id"] or "unknown (no depth/status received)",
    }


class Replay:
    """One replay over DDS: the rclpy context, the :class:`Replayer`, the node process when started here,
    and the Ctrl-C flag; use as a context manager (shuts the context down).

    Args:
        recorder: the open output bag.
        options: how to replay.
        compressed: whether the images are CompressedImage.
        node: the node process started here, or None (a running node).
        stop: set on Ctrl-C: publishing and waiting end at once.
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


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# The whole replay
# --------------------------------------------------------------------------------------------------

def _open_source(bag: Path, topics: CameraTopics, out: Path, options: ReplayOptions,
                 frames: Iterable[BagFrame] | None) -> tuple[BagFrame, Iterator[BagFrame], int]:
    """The first frame (reading it checks the topics), the frames after it, and the bag's image count.

    Raises:
        BagError: an unusable bag, no image, or outputs of an earlier run in ``out``.
    """
    for path in (out / "depth_bag", out / "report"):
        if path.exists():
            raise BagError(f"{path} exists: choose another --out or remove it")
    frames = iter(camera_frames(bag, topics, options.tolerance_ns) if frames is None else frames)
    first = next(frames, None)
    if first is None:
        raise BagError(f"{bag}: no image on {topics.image}")
    return first, frames, bag_extent(bag, topics.image)[1]


def replay_bag(bag: Path, topics: CameraTopics, out: Path, options: ReplayOptions,
               node_parameters: dict[str, object] | None = None, frames: Iterable[BagFrame] | None = None,
               notes: dict[str, str] | None = None, prog: str = "ppd-bag-replay") -> int:
    """Replay ``bag`` through depth_node into ``out/depth_bag``, then write ``out/report/``.

    Args:
        bag: the camera bag (rosbag2 directory).
        topics: its topics (image required; camera_info and sparse published when given; depth and pose
            for the evaluation).
        out: output folder; ``depth_bag`` and ``report`` must not exist in it.
        options: how to replay.
        node_parameters: start depth_node here with these parameters (``use_compressed`` and, with
            ``options.clock``, ``use_sim_time`` added unless given); None: use a running node.
        frames: the frames to publish (default: ``camera_frames(bag, topics)``), e.g. with sparse depth added.
        notes: first lines of the report (what the source is).
        prog: the program name in messages.

    Returns:
        The exit status (module docstring).
    """
    try:
        first, frames, total = _open_source(bag, topics, out, options, frames)
        # Shared memory with segments large enough for clouds: with the default transports a message over
        # 0.5 MB goes by UDP, and a lost fragment waits for the next heartbeat (3 s stalls under load).
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(installed_share_file("config/fastdds_shm.xml")))
    except (BagError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    compressed = isinstance(first.image, CompressedImage)
    out.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    previous_handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
    node = None
    try:
        if node_parameters is not None:
            parameters = {"use_compressed": compressed, **({"use_sim_time": True} if options.clock else {}),
                          **node_parameters}
            print(f"[1/3] starting depth_node: {' '.join(parameter_text(*item) for item in parameters.items())}",
                  flush=True)
            node = NodeProcess(node_command(parameters, options.namespace))
        else:
            print(f"[1/3] using a running depth_node in namespace '{options.namespace or '/'}'", flush=True)
        with BagRecorder(out / "depth_bag") as recorder, Replay(recorder, options, compressed, node, stop) as replay:
            replay.connect()
            print(f"[2/3] publishing {total} frames ({'paced' if options.paced else f'rate {options.rate:g}'}), "
                  f"recording the outputs -> {recorder.path}", flush=True)
            replay.play(chain([first], frames), total)
            if not stop.is_set():
                replay.drain()
            result = replay.result(recorder.counts)
        if node is not None:
            node.stop()
    except BagError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except ReplayError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        if node is not None:
            node.close()
    try:
        return _report(bag, topics, out, options, result, notes, prog)
    except KeyboardInterrupt:  # a second Ctrl-C
        print(f"{prog}: interrupted during the evaluation", file=sys.stderr)
        return 130


def _report(bag: Path, topics: CameraTopics, out: Path, options: ReplayOptions, result: ReplayResult,
            notes: dict[str, str] | None, prog: str) -> int:
    """[3/3]: evaluate, write ``out/report/`` and print the summary; the exit status."""
    report_dir = out / "report"
    print(f"[3/3] evaluating {result.received} frames -> {report_dir}", flush=True)
    try:
        evaluation = evaluate(bag, topics, out / "depth_bag", result, options, f"{prog}: {bag.name}")
    except BagError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    stats = result.stats()
    summary = evaluation.write(report_dir, complete=result.complete,
                               notes={"bag": str(bag), **(notes or {}), **replay_notes(stats, options)})
    write_json_atomic(report_dir / "replay.json", stats)
    for name, value in replay_notes(stats, options).items():
        print(f"{name}: {value}")
    for name, value, delta_1, chamfer_m in headline_rows(summary):  # protocols, then TAE rows (value only)
        chamfer = f", edge chamfer {chamfer_m:.4f} m" if chamfer_m != "" else ""
        print(f"{name}: {value:.4f}" if delta_1 == "" else f"{name}: AbsRel {value:.4f}, delta1 {delta_1:.4f}{chamfer}")
    print(f"{summary['frames']['scored']}/{summary['frames']['total']} frames scored; report: "
          f"{report_dir / 'report.html'}; depth bag: {out / 'depth_bag'}")
    if not result.complete:
        return 130
    if result.published and not result.received:
        print(f"{prog}: error: no depth output for any of the {len(result.published)} frames: does the node get "
              "a CameraInfo (or run with intrinsics_source:=moge2)? See its log and /diagnostics.", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def ros_namespace(text: str) -> str:
    """argparse type: a ROS namespace -> "" (root) or "/name" without a trailing slash."""
    stripped = text.strip("/")
    return f"/{stripped}" if stripped else ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-bag-replay",
        description="Publish a camera bag into depth_node over DDS with its original timing, record the node's "
        "outputs to a bag and evaluate them: accuracy against the bag's ground truth, dropped frames, latency.")
    parser.add_argument("bag", type=Path, help="camera bag (rosbag2 directory, sqlite3 or MCAP)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: depth_bag/, report/ (neither may exist yet)")
    parser.add_argument("--image-topic", required=True,
                        help="sensor_msgs/Image or CompressedImage (the node then needs use_compressed:=true)")
    parser.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo, published with each image")
    parser.add_argument("--depth-topic", help="ground-truth depth (32FC1 m or 16UC1 mm), for the evaluation")
    parser.add_argument("--sparse-topic", help="metric sensor depth published on the node's sparse_depth")
    parser.add_argument("--pose-topic", help="camera poses for the temporal alignment error: PoseStamped, "
                        "TransformStamped, or tf2_msgs/TFMessage with --pose-frames")
    parser.add_argument("--pose-frames", nargs=2, metavar=("PARENT", "CHILD"), help="transform to take from a tf topic")
    parser.add_argument("--tolerance-ms", type=positive_float, default=5.0,
                        help="largest stamp difference of a message matched to an image, ms (default: 5)")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--rate", type=positive_float, default=1.0,
                        help="bag time per wall time: 2 plays twice as fast (default: 1)")
    timing.add_argument("--paced", action="store_true",
                        help="publish each frame once the previous one's outputs arrived (deterministic, no drops)")
    parser.add_argument("--clock", action="store_true",
                        help="also publish /clock in bag time, for a node with use_sim_time:=true")
    parser.add_argument("--namespace", type=ros_namespace, default="", help="the node's namespace (default: /)")
    parser.add_argument("--start-node", action="store_true",
                        help="start depth_node here (stopped after), with the -p parameters")
    parser.add_argument("-p", dest="parameters", type=parameter_assignment, action="append", default=[],
                        metavar="NAME:=VALUE", help="a depth_node parameter, with --start-node (repeatable)")
    parser.add_argument("--timeout", type=positive_float, default=60.0,
                        help="longest wait for the node, a paced frame's outputs, or outputs after the last frame, "
                        "s (default: 60)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.parameters and not args.start_node:
        parser.error("-p sets the parameters of a node started with --start-node")
    unknown = sorted({name for name, _ in args.parameters} - set(SPECS) - {"use_sim_time"})
    if unknown:  # the node would ignore them silently
        parser.error(f"unknown depth_node parameter(s) {', '.join(unknown)}; its parameters are: "
                     f"use_sim_time, {', '.join(SPECS)}")
    topics = CameraTopics(image=args.image_topic, camera_info=args.camera_info_topic, depth=args.depth_topic,
                          sparse=args.sparse_topic, pose=args.pose_topic,
                          pose_frames=tuple(args.pose_frames) if args.pose_frames else None)
    options = ReplayOptions(namespace=args.namespace, rate=args.rate, paced=args.paced, clock=args.clock,
                            timeout_s=args.timeout, tolerance_ns=round(args.tolerance_ms * 1e6))
    return replay_bag(args.bag, topics, args.out, options, dict(args.parameters) if args.start_node else None)


if __name__ == "__main__":
    sys.exit(main())
