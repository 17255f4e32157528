"""How long depth_node takes to stop with a frame in inference, escalated like ``ros2 launch`` (SIGINT,
SIGTERM 5 s later, SIGKILL 5 s after that): the node runs the bundled model at a large target_area as its
own process while a camera publishes 640x480 frames at 2 Hz.

    python -m pixel_perfect_ros.tools.bench_shutdown [--target-area 1048576]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..msg import DepthStatus
from ..ros.conversions import pinhole_camera_info, rgb8_to_image
from ..ros.node_process import NodeProcess, node_command
from .cli import positive_int

LAUNCH_ESCALATION = (("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL))
"""What ros2 launch sends, 5 s apart, to a process still running after SIGINT."""
GRACE_S = 5.0


def camera(node, stopped: threading.Event, period_s: float = 0.5) -> None:
    """Publish a 640x480 frame and its CameraInfo every ``period_s`` until ``stopped``."""
    image_pub = node.create_publisher(Image, "image", 10)
    info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    while not stopped.wait(period_s):
        header = Header(stamp=node.get_clock().now().to_msg(), frame_id="camera_optical_frame")
        image_pub.publish(rgb8_to_image(rgb, header))
        info_pub.publish(pinhole_camera_info(K, 640, 480, header))


def stop_like_launch(process: subprocess.Popen) -> tuple[int, float, str]:
    """SIGINT, escalated as ros2 launch does; (exit code, seconds from SIGINT to exit, last signal sent)."""
    start, last = time.monotonic(), "SIGINT"
    process.send_signal(signal.SIGINT)
    for name, signum in LAUNCH_ESCALATION:
        try:
            process.wait(timeout=GRACE_S)
            break
        except subprocess.TimeoutExpired:
            process.send_signal(signum)
            last = name
    process.wait()
    return process.returncode, time.monotonic() - start, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_shutdown", description=__doc__.splitlines()[0])
    parser.add_argument("--target-area", type=positive_int, default=1024 * 1024,
                        help="the node's target_area, pixels (larger: slower frames)")
    args = parser.parse_args(argv)
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(100, 200))  # the node inherits it
    node_process = NodeProcess(node_command({"lazy": False, "target_area": args.target_area}))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_shutdown_camera", context=context)
    statuses: list[DepthStatus] = []
    node.create_subscription(DepthStatus, "depth/status", statuses.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stopped = threading.Event()
    threading.Thread(target=camera, args=(node, stopped), daemon=True).start()
    try:
        while not statuses:
            node_process.check_running()
            executor.spin_once(timeout_sec=0.1)
        print(f"frame time {statuses[0].total_ms / 1e3:.1f} s; stopping 1 s into the next frame")
        time.sleep(1.0)
        code, seconds, last = stop_like_launch(node_process.process)
        print(f"exit code {code} after {seconds:.2f} s from SIGINT (last signal sent: {last})")
    finally:
        stopped.set()
        node_process.close()
        executor.shutdown()
        context.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
