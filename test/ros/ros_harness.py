"""Test harness over real rclpy and DDS: a context with its own domain id, the depth node and a
probe node spun by one executor in a background thread.

The executor is single-threaded, as in ``depth_node``'s ``main`` (``rclpy.spin``). With rclpy's
MultiThreadedExecutor (2 threads) the spin thread alone used ~70% of a core here during a 30 Hz image
stream (its overhead: ros2/rclpy#1452), and 10-60% of the frames were lost in the node's best-effort
input queue; the single-threaded one used ~6% and lost none.
"""
from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from pixel_perfect_ros.msg import DepthStatus
from pixel_perfect_ros.ros.depth_node import DepthNode

OUTPUTS = {"depth/image": Image, "depth/camera_info": CameraInfo, "depth/points": PointCloud2,
           "depth/status": DepthStatus, "/diagnostics": DiagnosticArray, "/rosout": Log}
FRAME_ID = "camera_optical_frame"
OUTPUT_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
"""Reliable, like RViz's defaults."""
ROSOUT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Transient local like the /rosout publishers, so log lines written before discovery still arrive."""


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def result_of(future, timeout: float = 20.0, what: str = "a service response"):
    """The result of an rclpy future completed by the spinning executor; fail after ``timeout`` s."""
    wait_for(future.done, timeout, what)
    return future.result()


def camera_info(width: int, height: int, stamp, fx: float = 100.0, fy: float = 110.0, frame_id: str = FRAME_ID):
    """A pinhole CameraInfo with principal point at the image centre."""
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.stamp, info.header.frame_id = stamp, frame_id
    cx, cy = (width - 1) / 2, (height - 1) / 2
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    return info


def rgb_image(rgb: np.ndarray, stamp, encoding: str = "rgb8", frame_id: str = FRAME_ID) -> Image:
    """An Image message from an (H, W, 3) uint8 RGB array, in rgb8 or bgr8."""
    data = rgb if encoding == "rgb8" else rgb[..., ::-1]
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=rgb.shape[1] * 3)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(data).tobytes()
    return msg


class Probe(Node):
    """Publishes camera input into the node under test and records everything it publishes."""

    def __init__(self, context, namespace: str = "", compressed: bool = False):
        super().__init__("probe", context=context, namespace=namespace)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(CompressedImage if compressed else Image,
                                               "image/compressed" if compressed else "image", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
        self.received: dict[str, list] = defaultdict(list)
        self._lock = threading.Lock()
        self.output_subscriptions = {}

    def listen(self, *topics: str) -> None:
        """Subscribe to outputs (``OUTPUT_QOS``) or to ``/rosout`` (``ROSOUT_QOS``)."""
        for topic in topics:
            self.output_subscriptions[topic] = self.create_subscription(
                OUTPUTS[topic], topic, lambda msg, t=topic: self._record(t, msg),
                ROSOUT_QOS if topic == "/rosout" else OUTPUT_QOS)

    def _record(self, topic: str, msg) -> None:
        with self._lock:
            self.received[topic].append(msg)

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.received[topic])

    def last(self, topic: str):
        with self._lock:
            return self.received[topic][-1]

    def messages(self, topic: str) -> list:
        """A copy of everything recorded on ``topic`` so far, oldest first."""
        with self._lock:
            return list(self.received[topic])

    def for_stamp(self, topic: str, stamp):
        """The last message recorded on ``topic`` whose header has ``stamp``, or None."""
        return next((msg for msg in reversed(self.messages(topic)) if msg.header.stamp == stamp), None)

    def logs(self, node_name: str = "depth_node") -> list[str]:
        """The /rosout lines of ``node_name`` recorded so far (needs ``listen("/rosout")``)."""
        return [log.msg for log in self.messages("/rosout") if log.name == node_name]

    def now(self):
        return self.get_clock().now().to_msg()

    def send(self, image, info) -> None:
        """Publish one image and, if given, its CameraInfo."""
        self.image_pub.publish(image)
        if info is not None:
            self.info_pub.publish(info)


class RosHarness:
    """One rclpy context (random domain id) with the depth node, a probe and a spinning executor."""

    def __init__(self):
        self.context = rclpy.Context()
        self.domain_id = random.randint(1, 200)
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []
        self.spin_error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception as error:  # a callback raised (kept for close), or the executor shut down in close
            if not self._closing:
                self.spin_error = error

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def depth_node(self, checkpoints, **parameters) -> DepthNode:
        params = {"checkpoint": str(checkpoints["ppd"]), "semantics": str(checkpoints["da2"]),
                  "target_area": 64 * 48, "steps": 2, **parameters}
        overrides = [rclpy.parameter.Parameter(k, value=v) for k, v in params.items()]
        return self.add(DepthNode(context=self.context, parameter_overrides=overrides))

    def probe(self, *topics: str, **kwargs) -> Probe:
        probe = self.add(Probe(self.context, **kwargs))
        probe.listen(*topics)
        return probe

    def close(self) -> None:
        """Stop the executor, destroy the nodes and the context; raise if a callback had stopped the executor."""
        self._closing = True
        self.executor.shutdown(timeout_sec=5)
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=5)
        if self.spin_error is not None:
            raise RuntimeError("a callback raised and stopped the executor") from self.spin_error


def connect(probe: Probe, node: DepthNode, *topics: str) -> None:
    """Wait until the probe's publishers and the listened outputs are matched with the node."""
    wait_for(lambda: probe.image_pub.get_subscription_count() > 0 and probe.info_pub.get_subscription_count() > 0,
             what="input subscriptions")
    publishers = {"depth/image": node._pub_depth, "depth/camera_info": node._pub_info,
                  "depth/points": node._pub_points, "depth/status": node._pub_status}
    for topic in topics:
        if topic in publishers:
            wait_for(lambda t=topic: publishers[t].get_subscription_count() > 0, what=f"{topic} subscription")


def bag_messages(path) -> dict[str, list[tuple[int, bytes]]]:
    """(bag time ns, raw CDR) per topic of a rosbag2, in time order."""
    with Reader(path) as reader:
        messages: dict[str, list] = {c.topic: [] for c in reader.connections}
        for connection, time_ns, raw in reader.messages():
            messages[connection.topic].append((time_ns, raw))
    return messages


def sigterm_tool(module: str, args: list[str], log: Path, started: str, cwd: Path) -> tuple[int, str]:
    """Run ``python -m module args`` with stdout and stderr in ``log``; once ``log`` matches the regular
    expression ``started``, send SIGTERM (as timeout, systemd, docker and Slurm stop a process). Returns
    (exit code, everything it printed); fails if it exits before matching or hangs."""
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=output, stderr=subprocess.STDOUT,
                                   cwd=cwd)
        try:
            deadline = time.monotonic() + 120.0
            while not re.search(started, log.read_text()):
                assert process.poll() is None, f"exited {process.returncode} first:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no {started!r} within 120 s"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        finally:
            process.kill()
    return process.returncode, log.read_text()
