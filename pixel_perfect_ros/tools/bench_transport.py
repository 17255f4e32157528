"""Output stalls and lost input frames of depth_node: Fast DDS's default transports against its profile.

The shipped shared-memory profile is ``config/fastdds_shm.xml``; the node runs the bundled model. Each
case runs in a child process whose environment has no profile variable, or FASTDDS_DEFAULT_PROFILES_FILE
set to the profile (the name Fast DDS 3 reads: ROS 2 Kilted and this repository's PyPI wheels), on a
random ROS_DOMAIN_ID, so that depth_node and the probe use the same transports, as with depth.launch.py
(node and RViz). The child starts depth_node (``node_process``; its parameters at their defaults unless
given with ``-p``) and replays synthetic frames into it (``replayer.Replay``) while subscribing to
depth/image, depth/camera_info, depth/points and depth/status (reliable, as RViz):

- paced: ``--frames`` frames of ``--size``, each once the previous one's outputs have arrived;
- stream: frames of ``--stream-size`` at ``--rate`` Hz for ``--seconds`` s (the node's input
  subscription is best-effort: frames it cannot take are lost).

Per run it prints the frames published and received by the node (depth/status ``frames_received``;
``frames_lost`` when nonzero), the depth/camera_info messages received, the gaps over 1 s between
consecutive ones, the longest gap, and the publish -> depth/image latency.

    python -m pixel_perfect_ros.tools.bench_transport [--frames 20] [--size 256x192]
        [--stream-size 640x480] [--rate 30] [--seconds 5] [-p NAME:=VALUE ...] [--profile PATH]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ..ros.bag_io import BagFrame, installed_share_file
from ..ros.benchmark import camera_frame
from ..ros.conversions import pinhole_camera_info
from ..ros.fastdds import PROFILE_VARIABLES, profile_variable
from ..ros.node_process import NodeProcess, node_command
from ..ros.replayer import Replay, ReplayError, ReplayOptions, ReplayResult, topic_name
from .cli import image_size, parameter_assignment, positive_float, positive_int

PROFILE_VARIABLE = profile_variable(os.environ.get("ROS_DISTRO", ""))
"""The variable set in the profile case; both names are removed in the default case."""
CASES = ("default", "profile")
GAP_S = 1.0
"""A pause between consecutive depth/camera_info messages longer than this counts as a stall, seconds."""
START_TIMEOUT_S = 120.0
"""Longest wait for the node to start (torch import and model load on a loaded machine), seconds."""
PACED_TIMEOUT_S = 20.0
"""Longest wait for a paced frame's outputs, seconds."""
STREAM_TIMEOUT_S = 5.0
"""After the stream, waiting for outputs ends once none has arrived for this long, seconds."""
SETTLE_S = 1.0
"""Wait after the probe has matched the node, before the first frame, seconds: the node's best-effort
subscription drops frames of a publisher it has not matched yet (discovery finishes on both sides
independently)."""
RESULT = "result:"
"""Prefix of a child's result lines (repeated in the summary)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_transport", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=positive_int, default=20, help="paced frames (default: 20)")
    parser.add_argument("--size", type=image_size, default=(192, 256), help="paced WIDTHxHEIGHT (default: 256x192)")
    parser.add_argument("--stream-size", type=image_size, default=(480, 640),
                        help="stream WIDTHxHEIGHT (default: 640x480)")
    parser.add_argument("--rate", type=positive_float, default=30.0, help="stream rate, Hz (default: 30)")
    parser.add_argument("--seconds", type=positive_float, default=5.0, help="stream length, s (default: 5)")
    parser.add_argument("-p", "--parameter", type=parameter_assignment, action="append", default=[],
                        metavar="NAME:=VALUE", help="a depth_node parameter (repeatable; default: the node's defaults)")
    parser.add_argument("--profile", type=Path, help="Fast DDS profile of the profile case "
                        "(default: the installed config/fastdds_shm.xml)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # a child: one case, this environment
    return parser


class ArrivalLog:
    """Takes the replay's recorder's place: notes when each output message arrived (``time.monotonic()``
    seconds, per absolute topic) instead of writing a bag."""

    def __init__(self):
        self.arrivals: dict[str, list[float]] = defaultdict(list)

    def write(self, topic: str, msg, time_ns: int) -> None:
        self.arrivals[topic].append(time.monotonic())


def frames(height: int, width: int, count: int, period_s: float) -> Iterator[BagFrame]:
    """``count`` copies of one seeded bgr8 camera frame with a pinhole CameraInfo, stamped ``period_s``
    apart from now."""
    image = camera_frame(height, width)
    start_ns = time.time_ns()
    for i in range(count):
        stamp_ns = start_ns + round(i * period_s * 1e9)
        header = Header(frame_id=image.header.frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        message = image.message
        yield BagFrame(stamp_ns=stamp_ns, camera_info=pinhole_camera_info(image.P[:, :3], width, height, header),
                       image=Image(header=header, height=height, width=width, encoding=message.encoding,
                                   step=message.step, data=message.data))


def run(node: NodeProcess, options: ReplayOptions, batch: Iterator[BagFrame],
        total: int) -> tuple[ReplayResult, list[float]]:
    """Replay ``batch`` (``total`` frames) into the running node; the result and depth/camera_info's arrival times."""
    log = ArrivalLog()
    with Replay(log, options, compressed=False, node=node, stop=threading.Event()) as replay:
        replay.connect()
        replay.spin_until(lambda: False, time.monotonic() + SETTLE_S)
        replay.play(batch, total)
        replay.drain()
        result = replay.result({})
    return result, log.arrivals[topic_name(options.namespace, "depth/camera_info")]


def counters(result: ReplayResult, before: tuple[int, int]) -> tuple[int, int]:
    """The node's (frames_received, frames_lost) since it started, from the run's last depth/status
    (``before`` when none arrived)."""
    if not result.statuses:
        return before
    last = result.statuses[max(result.statuses)]
    return int(last.frames_received), int(last.frames_lost)


def summary(case: str, name: str, result: ReplayResult, info_s: list[float], before: tuple[int, int],
            after: tuple[int, int]) -> str:
    """The result line of one run; ``before`` and ``after``: the node's ``counters`` around it."""
    received, lost = after[0] - before[0], after[1] - before[1]
    gaps = np.diff(info_s)
    latency = result.stats()["latency_ms"]
    latency_text = f"median {latency['median']:.0f} ms, max {latency['max']:.0f} ms" if latency else "none"
    return (f"{RESULT} {case:<7} {name}: published {len(result.published)}, node received {received}"
            f"{f', lost {lost}' if lost else ''}; depth/camera_info {len(info_s)}, gaps > {GAP_S:g} s: "
            f"{int((gaps > GAP_S).sum())}, max gap {gaps.max() if gaps.size else 0.0:.2f} s; latency {latency_text}")


def run_case(case: str, args: argparse.Namespace) -> int:
    """A child: start depth_node in this process's environment, run the paced and stream replays, print the results."""
    print(f"== {case}: {PROFILE_VARIABLE}={os.environ.get(PROFILE_VARIABLE, '(unset)')}, "
          f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')}", flush=True)
    (height, width), (stream_height, stream_width) = args.size, args.stream_size
    stream_total = round(args.seconds * args.rate)
    node = NodeProcess(node_command(dict(args.parameter)))
    try:
        run(node, ReplayOptions(timeout_s=START_TIMEOUT_S), iter(()), 0)  # until the node is up
        paced, info_s = run(node, ReplayOptions(paced=True, timeout_s=PACED_TIMEOUT_S),
                            frames(height, width, args.frames, 0.1), args.frames)
        after_paced = counters(paced, (0, 0))
        print(summary(case, f"paced {args.frames} x {width}x{height}", paced, info_s, (0, 0), after_paced),
              flush=True)
        stream, info_s = run(node, ReplayOptions(timeout_s=STREAM_TIMEOUT_S),
                             frames(stream_height, stream_width, stream_total, 1.0 / args.rate), stream_total)
        print(summary(case, f"stream {args.rate:g} Hz x {args.seconds:g} s x {stream_width}x{stream_height}",
                      stream, info_s, after_paced, counters(stream, after_paced)), flush=True)
        node.stop()
    except ReplayError as error:
        print(f"bench_transport: error: {error}", file=sys.stderr)
        return 1
    finally:
        node.close()
    return 0


def case_environment(case: str, profile: Path, domain_id: int) -> dict[str, str]:
    """This process's environment without the profile variables (plus ``profile`` in the profile case),
    on ``domain_id``."""
    environment = {name: value for name, value in os.environ.items() if name not in PROFILE_VARIABLES}
    if case == "profile":
        environment[PROFILE_VARIABLE] = str(profile)
    return {**environment, "ROS_DOMAIN_ID": str(domain_id)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.case:
        return run_case(args.case, args)
    try:
        profile = args.profile or installed_share_file("config/fastdds_shm.xml")
    except FileNotFoundError as error:
        parser.error(str(error))
    if not profile.is_file():
        parser.error(f"no such file: {profile}")
    domain_id = random.randint(201, 232)  # the tests take 1..200
    results = []
    for case in CASES:
        child = subprocess.Popen([sys.executable, "-m", __spec__.name, *argv, "--case", case], text=True,
                                 stdout=subprocess.PIPE, env=case_environment(case, profile, domain_id))
        for line in child.stdout:
            print(line, end="", flush=True)
            if line.startswith(RESULT):
                results.append(line)
        if child.wait() != 0:
            return child.returncode
    print(f"\nprofile case: {PROFILE_VARIABLE}={profile}; {os.cpu_count()} CPUs")
    print("".join(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
