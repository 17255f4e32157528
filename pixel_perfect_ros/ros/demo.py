"""``ppd-demo``: the whole pipeline on a synthetic camera bag, ending in a report.

[1/4] render a synthetic camera bag (``synthetic/bag.py``); [2/4] start ``depth_node`` as a subprocess
(metric ``sparse_topic`` mode; the bundled model unless official files are given); [3/4] play the bag
through it over DDS one frame at a time, with a simulated sparse LiDAR, recording every output to a
rosbag2; [4/4] read both bags back and write ``report/`` (metrics.json, report.md, depth strips and
point-cloud views, helpers in ``tools/report.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rclpy.time import Time
from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from pixel_perfect_ros.msg import DepthStatus

from ..geometry.projection import back_project
from ..inference.checkpoints import SEMANTICS_TYPES
from ..synthetic.bag import synthetic_camera_bag
from ..tools import report
from ..tools.cli import image_size, positive_int
from .conversions import camera_info_to_intrinsics, depth_to_image, image_to_depth, image_to_rgb8

SOURCE_TOPICS = {"/camera/image": Image, "/camera/camera_info": CameraInfo, "/camera/depth_gt": Image}
OUTPUT_TOPICS = {"/depth/image": Image, "/depth/camera_info": CameraInfo, "/depth/points": PointCloud2,
                 "/depth/status": DepthStatus}
SPARSE_TOPIC = "/camera/sparse_depth"
LIDAR_ROWS = 16
"""Rows of the simulated LiDAR (evenly spaced; every 2nd column of each)."""
NODE_PARAMETERS = {"depth_mode": "sparse_topic", "input_reliability": "reliable",
                   "output_resolution": "input", "publish_points": True, "points_xyzrgb": True, "lazy": True}
START_TIMEOUT_S, FRAME_TIMEOUT_S, EXIT_TIMEOUT_S = 120.0, 60.0, 30.0
CLOUD_YAW_DEG = 35.0
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class DemoError(RuntimeError):
    """A stage failed; the message says why and what to do."""


def installed_share_file(relative: str) -> Path:
    """A file of this package's ``share/pixel_perfect_ros/`` as installed: under a colcon prefix on
    ``AMENT_PREFIX_PATH``, or in the virtual environment (``make venv`` installs it there)."""
    prefixes = [*filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)), sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / "pixel_perfect_ros" / relative
        if path.is_file():
            return path
    raise DemoError(f"{relative} is not installed under {', '.join(prefixes)}: build the package "
                    "(make venv, or colcon build and source install/setup.bash)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppd-demo", description="Depth for a synthetic camera bag through "
                                     "the ROS 2 node over DDS, recorded to a bag and scored in a report.")
    parser.add_argument("--out", type=Path, required=True, help="output folder: camera_bag/, depth_bag/, report/")
    parser.add_argument("--frames", type=positive_int, default=24, help="frames to render (default: 24)")
    parser.add_argument("--size", type=image_size, default=(192, 256), help="WIDTHxHEIGHT (default: 256x192)")
    parser.add_argument("--seed", type=int, default=3, help="scene and camera-path seed (default: 3)")
    parser.add_argument("--checkpoint", type=Path, help="official ppd.pth or ppd_moge.pth (default: bundled model)")
    parser.add_argument("--semantics", type=Path, help="its semantics encoder file; given with --checkpoint")
    parser.add_argument("--semantics-type", choices=SEMANTICS_TYPES, default="da2", help="default: da2")
    parser.add_argument("--target-area", type=positive_int, help="processing area, pixels (default: the node's)")
    return parser


def node_command(args: argparse.Namespace) -> list[str]:
    """The depth_node command line: remaps to the bag's topics and ``NODE_PARAMETERS`` (+ model files)."""
    parameters = dict(NODE_PARAMETERS)
    if args.checkpoint:
        parameters.update(checkpoint=str(args.checkpoint), semantics=str(args.semantics),
                          semantics_type=args.semantics_type)
    if args.target_area:
        parameters["target_area"] = args.target_area
    command = [sys.executable, "-m", "pixel_perfect_ros.ros.depth_node", "--ros-args", "-r", "image:=/camera/image",
               "-r", "camera_info:=/camera/camera_info", "-r", f"sparse_depth:={SPARSE_TOPIC}"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    return command


def simulated_lidar(depth: np.ndarray) -> np.ndarray:
    """(H, W) float32 metres, NaN = invalid -> the same kept on ``LIDAR_ROWS`` evenly spaced rows and
    every 2nd column (from column 0), NaN elsewhere."""
    sparse = np.full_like(depth, np.nan)
    rows = np.round(np.linspace(0, depth.shape[0] - 1, LIDAR_ROWS)).astype(int)
    sparse[rows, ::2] = depth[rows, ::2]
    return sparse


def read_bag(path: Path, types: dict[str, type]) -> dict[int, dict[str, object]]:
    """The messages of ``types``' topics in a rosbag2, by bag time (ns, sorted) and topic."""
    frames: dict[int, dict[str, object]] = defaultdict(dict)
    with Reader(path) as reader:
        connections = [c for c in reader.connections if c.topic in types]
        for connection, time_ns, raw in reader.messages(connections=connections):
            frames[time_ns][connection.topic] = deserialize_message(raw, types[connection.topic])
    return dict(sorted(frames.items()))


def cloud_to_arrays(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """An organized little-endian x, y, z, rgb float32 PointCloud2 -> ((h, w, 3) float32 points in its
    frame and unit, (h, w, 3) uint8 RGB unpacked from ``rgb``'s ``0x00RRGGBB`` bits)."""
    offsets = {field.name: field.offset for field in msg.fields}
    data = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.row_step)[:, :msg.width * msg.point_step]
    data = data.reshape(msg.height, msg.width, msg.point_step)

    def field(name: str, dtype: str) -> np.ndarray:
        return data[..., offsets[name]:offsets[name] + 4].copy().view(dtype)[..., 0]  # (h, w)
    bits = field("rgb", "<u4")
    rgb = np.stack([(bits >> shift) & 0xFF for shift in (16, 8, 0)], axis=-1).astype(np.uint8)
    return np.stack([field(name, "<f4") for name in "xyz"], axis=-1), rgb


class NodeProcess:
    """depth_node as a subprocess; its stderr lines are printed as ``  node: ...`` and the last kept."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.tail: deque[str] = deque(maxlen=30)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.tail.append(line.rstrip())
            print(f"  node: {line.rstrip()}", flush=True)

    def check_running(self) -> None:
        """Raise DemoError with the node's stderr tail if it has exited."""
        if self.process.poll() is not None:
            self._reader.join(timeout=5)
            raise DemoError(f"the node exited (code {self.process.returncode}):\n" + "\n".join(self.tail))

    def stop(self) -> None:
        """SIGINT, then wait for a clean exit; DemoError if it fails or hangs."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DemoError(f"the node did not exit within {EXIT_TIMEOUT_S:.0f} s of SIGINT") from None
        if self.process.returncode != 0:
            self.check_running()

    def close(self) -> None:
        """Kill the node if it still runs; wait for it and the reader thread."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)


class Player(Node):
    """Publishes camera frames into depth_node and writes every output it receives to a rosbag2."""

    def __init__(self, context: rclpy.Context, writer: Writer):
        super().__init__("ppd_demo_player", context=context)
        self.inputs = {topic: self.create_publisher(msg_type, topic, QOS) for topic, msg_type in
                       ((SPARSE_TOPIC, Image), ("/camera/camera_info", CameraInfo), ("/camera/image", Image))}
        self.received: dict[str, set[int]] = defaultdict(set)
        self.arrival_s: dict[int, float] = {}
        self._writer = writer
        typestore = get_typestore(Stores.ROS2_KILTED)
        typestore.register(get_types_from_msg(installed_share_file("msg/DepthStatus.msg").read_text(),
                                              "pixel_perfect_ros/msg/DepthStatus"))
        self._connections = {
            topic: writer.add_connection(topic, f"{t.__module__.split('.')[0]}/msg/{t.__name__}", typestore=typestore)
            for topic, t in OUTPUT_TOPICS.items()}
        self.outputs = [self.create_subscription(t, topic, lambda msg, topic=topic: self._record(topic, msg), QOS)
                        for topic, t in OUTPUT_TOPICS.items()]

    def _record(self, topic: str, msg) -> None:
        stamp = Time.from_msg(msg.header.stamp).nanoseconds
        self._writer.write(self._connections[topic], stamp, serialize_message(msg))
        self.received[topic].add(stamp)
        if topic == "/depth/image":
            self.arrival_s[stamp] = time.perf_counter()

    def connected(self) -> bool:
        """Whether every input publisher and output subscription is matched with the node."""
        return (all(p.get_subscription_count() > 0 for p in self.inputs.values())
                and all(s.get_publisher_count() > 0 for s in self.outputs))

    def has_outputs(self, stamp: int) -> bool:
        """Whether every output of the frame stamped ``stamp`` (ns) has arrived."""
        return all(stamp in self.received[topic] for topic in OUTPUT_TOPICS)


def spin_until(executor: SingleThreadedExecutor, done, timeout_s: float, node: NodeProcess, what: str) -> None:
    """Spin until ``done()``; DemoError if the node exits or after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not done():
        node.check_running()
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}; node log:\n" + "\n".join(node.tail))
        executor.spin_once(timeout_sec=0.05)


def play(frames: dict[int, dict], player: Player, executor: SingleThreadedExecutor, node: NodeProcess) -> list[float]:
    """Publish each frame (sparse depth, CameraInfo, image) and wait for all its outputs.

    Returns:
        Per frame, milliseconds from publishing the image to receiving its depth/image.
    """
    latencies_ms = []
    for i, (stamp, msgs) in enumerate(frames.items(), 1):
        image = msgs["/camera/image"]
        player.inputs[SPARSE_TOPIC].publish(
            depth_to_image(simulated_lidar(image_to_depth(msgs["/camera/depth_gt"])), image.header))
        player.inputs["/camera/camera_info"].publish(msgs["/camera/camera_info"])
        start = time.perf_counter()
        player.inputs["/camera/image"].publish(image)
        spin_until(executor, lambda: player.has_outputs(stamp), FRAME_TIMEOUT_S, node, f"the outputs of frame {i}")
        latencies_ms.append(1000.0 * (player.arrival_s[stamp] - start))
        print(f"  frame {i}/{len(frames)}: {latencies_ms[-1]:.0f} ms", flush=True)
    return latencies_ms


def run_node(args: argparse.Namespace, frames: dict[int, dict], depth_bag: Path) -> list[float]:
    """[2/4] and [3/4]: start the node, play ``frames`` through it into ``depth_bag``, stop it."""
    # Shared memory with segments large enough for the clouds: with the default transports a cloud over
    # 0.5 MB goes by UDP, and a lost fragment waits for the next heartbeat (3 s stalls under load).
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(installed_share_file("config/fastdds_shm.xml")))
    context = rclpy.Context()
    rclpy.init(args=[], context=context)  # no signal handlers (own context): Ctrl-C raises KeyboardInterrupt
    executor = SingleThreadedExecutor(context=context)
    node = NodeProcess(node_command(args))
    try:
        with Writer(depth_bag, version=9) as writer:
            player = Player(context, writer)
            executor.add_node(player)
            spin_until(executor, player.connected, START_TIMEOUT_S, node, "the node's subscriptions and outputs")
            print(f"[3/4] playing {len(frames)} frames through the node -> {depth_bag}", flush=True)
            latencies_ms = play(frames, player, executor, node)
            node.stop()
        return latencies_ms
    finally:
        node.close()
        for player in executor.get_nodes():
            player.destroy_node()
        executor.shutdown()
        context.try_shutdown()


def write_report(out: Path, frames: dict[int, dict], outputs: dict[int, dict], latencies_ms: list[float],
                 model: str) -> dict:
    """[4/4]: metrics.json, report.md, the first, middle and last frames' depth strips and the middle
    frame's point clouds in ``out``, from the source and output messages by stamp; returns the means."""
    out.mkdir()
    per_frame, stamps = [], list(frames)
    middle = len(stamps) // 2
    for i, stamp in enumerate(stamps):
        source, result = frames[stamp], outputs[stamp]
        gt, pred = image_to_depth(source["/camera/depth_gt"]), image_to_depth(result["/depth/image"])
        K, _ = camera_info_to_intrinsics(source["/camera/camera_info"], gt.shape[1], gt.shape[0])
        per_frame.append({"stamp_ns": stamp, **report.frame_metrics(pred, gt, K), "latency_ms": latencies_ms[i],
                          "node_total_ms": result["/depth/status"].total_ms})
        rgb = image_to_rgb8(source["/camera/image"])
        if i in (0, middle, len(stamps) - 1):
            cv2.imwrite(str(out / f"frame_{i:03d}.png"), report.depth_strip(rgb, gt, pred))
        if i == middle:  # the published cloud and the GT's, seen from the side around the GT's median point
            points, colors = cloud_to_arrays(result["/depth/points"])
            gt_points = back_project(gt, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
            pivot = np.nanmedian(gt_points.reshape(-1, 3), axis=0)
            cv2.imwrite(str(out / f"cloud_{i:03d}.png"), np.hstack([
                report.cloud_view(points, colors, pivot, CLOUD_YAW_DEG, "published depth/points"),
                report.cloud_view(gt_points, rgb, pivot, CLOUD_YAW_DEG, "ground truth")]))
    mean = report.mean_metrics([{k: v for k, v in f.items() if k != "stamp_ns"} for f in per_frame])
    (out / "metrics.json").write_text(json.dumps(report.json_safe({"frames": per_frame, "mean": mean}), indent=1))
    statuses = [outputs[stamp]["/depth/status"] for stamp in stamps]
    s = statuses[0]
    (out / "report.md").write_text(
        f"# ppd-demo report\n\nModel: {model}, `{s.model_id}`, {s.steps} steps at {s.processing_width}x"
        f"{s.processing_height}, {s.device} {s.dtype}; depth mode {s.depth_mode}, metric on "
        f"{sum(st.is_metric for st in statuses)}/{len(stamps)} frames.\n\nFrames: {len(stamps)} at {gt.shape[1]}x"
        f"{gt.shape[0]}. Latency from publishing an image to receiving its depth: mean "
        f"{statistics.mean(latencies_ms):.0f} ms, median {statistics.median(latencies_ms):.0f} ms (in the node: "
        f"mean {mean['node_total_ms']:.0f} ms).\n\n{report.markdown_table(('mean over frames', ''), report.summary_rows(mean))}"
        f"\nImages: `frame_XXX.png` (RGB | GT depth | predicted | relative error), `cloud_{middle:03d}.png` (the "
        f"published cloud and the ground truth, seen from {CLOUD_YAW_DEG:.0f} degrees to the side).\n")
    return mean


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.checkpoint is None) != (args.semantics is None):
        parser.error("give --checkpoint and --semantics together (official files), or neither (bundled model)")
    for path in (args.checkpoint, args.semantics):
        if path is not None and not path.is_file():
            parser.error(f"no such file: {path}")
    height, width = args.size
    bags = {name: args.out / name for name in ("camera_bag", "depth_bag", "report")}
    for path in bags.values():
        shutil.rmtree(path, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"[1/4] rendering {args.frames} frames at {width}x{height} (seed {args.seed}) -> {bags['camera_bag']}",
          flush=True)
    synthetic_camera_bag(bags["camera_bag"], args.frames, height, width, args.seed)
    frames = read_bag(bags["camera_bag"], SOURCE_TOPICS)
    model = f"the given files {args.checkpoint} + {args.semantics}" if args.checkpoint else "the bundled model"
    print(f"[2/4] starting depth_node with {model}", flush=True)
    try:
        latencies_ms = run_node(args, frames, bags["depth_bag"])
    except DemoError as error:
        print(f"ppd-demo: error: {error}", file=sys.stderr)
        return 1
    print(f"[4/4] writing the report -> {bags['report']}", flush=True)
    mean = write_report(bags["report"], frames, read_bag(bags["depth_bag"], OUTPUT_TOPICS), latencies_ms, model)
    print(f"done in {time.perf_counter() - start:.0f} s: {', '.join(str(p) for p in bags.values())}")
    print("means: " + "; ".join(f"{name} {value:.3f}" for name, value in report.summary_rows(mean)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
