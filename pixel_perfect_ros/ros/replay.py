"""A whole replay of a camera bag through depth_node (the work of ``ppd-bag-replay`` and ``ppd-demo``).

[1/3] check the bag's topics; start depth_node (``node_process.py``) or wait for a running one. [2/3]
publish each image (Image or CompressedImage, as in the bag) with its CameraInfo and sparse depth into
the node's inputs, on the bag's header-stamp timing scaled by the rate (late frames go at once, none is
skipped; optionally with ``/clock`` in bag time) or paced (each frame once the previous one's outputs
have arrived), and record every output to ``OUT/depth_bag`` (bag time = header stamp) until outputs stop
(``replayer.py``). [3/3] pair the outputs with the source frames by stamp and write ``OUT/report/``
(``replay_evaluation.py``: metrics.json, frames.csv, report.html; and replay.json): accuracy where the
bag has ground truth, and what offline evaluation cannot see: frames lost on the way, end-to-end
latency, stamps.

Exit status: 0 done, 1 the node failed or never appeared (or produced nothing), 2 bad arguments or
bag, 130 Ctrl-C, 143 SIGTERM (the bag is closed and valid, the report is marked incomplete).
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

from sensor_msgs.msg import CompressedImage

from ..evaluation.sequence import headline_rows, write_json_atomic
from .bag_io import BagError, BagFrame, BagRecorder, CameraTopics, bag_extent, camera_frames, installed_share_file
from .fastdds import profile_variable
from .interrupts import exit_status, interrupt, interrupted_by, stop_signals
from .node_process import NodeProcess, node_command, parameter_text
from .replay_evaluation import evaluate
from .replayer import Replay, ReplayError, ReplayOptions, ReplayResult, replay_notes


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
        os.environ.setdefault(profile_variable(os.environ.get("ROS_DISTRO", "")),
                              str(installed_share_file("config/fastdds_shm.xml")))
    except (BagError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    compressed = isinstance(first.image, CompressedImage)
    out.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    with stop_signals(interrupt) as received:  # Ctrl-C or SIGTERM after the replay: the evaluation ends
        try:
            with stop_signals(lambda signum: stop.set()):  # while replaying: publishing and waiting end
                result = _replay(chain([first], frames), total, out, options, compressed, node_parameters, stop)
        except BagError as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        except ReplayError as error:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 1
        try:
            return _report(bag, topics, out, options, result, notes, prog, exit_status(received))
        except KeyboardInterrupt as error:  # a second Ctrl-C or SIGTERM
            print(f"{prog}: interrupted ({interrupted_by(error)}) during the evaluation", file=sys.stderr)
            return exit_status(received)


def _replay(frames: Iterable[BagFrame], total: int, out: Path, options: ReplayOptions, compressed: bool,
            node_parameters: dict[str, object] | None, stop: threading.Event) -> ReplayResult:
    """[1/3] and [2/3]: start the node or find it, publish ``frames`` (``total`` in the bag) into it and record
    its outputs to ``out/depth_bag`` until they stop or ``stop`` is set; the node started here is stopped.

    Raises:
        BagError: the output bag cannot be written. ReplayError: the node failed or never appeared.
    """
    node = None
    try:
        if node_parameters is not None:
            # Not lazy (unless asked): a lazy node skips a frame that arrives before it has matched the
            # recorder's output subscriptions, which discovery does not order with the recorder's own match.
            parameters = {"use_compressed": compressed, "lazy": False,
                          **({"use_sim_time": True} if options.clock else {}), **node_parameters}
            print(f"[1/3] starting depth_node: {' '.join(parameter_text(*item) for item in parameters.items())}",
                  flush=True)
            node = NodeProcess(node_command(parameters, options.namespace))
        else:
            print(f"[1/3] using a running depth_node in namespace '{options.namespace or '/'}'", flush=True)
        with BagRecorder(out / "depth_bag") as recorder, Replay(recorder, options, compressed, node, stop) as replay:
            replay.connect()
            print(f"[2/3] publishing {total} frames ({'paced' if options.paced else f'rate {options.rate:g}'}), "
                  f"recording the outputs -> {recorder.path}", flush=True)
            replay.play(frames, total)
            if not stop.is_set():
                replay.drain()
            result = replay.result(recorder.counts)
        if node is not None:
            node.stop()
        return result
    finally:
        if node is not None:
            node.close()


def _report(bag: Path, topics: CameraTopics, out: Path, options: ReplayOptions, result: ReplayResult,
            notes: dict[str, str] | None, prog: str, interrupted_status: int) -> int:
    """[3/3]: evaluate, write ``out/report/`` and print the summary; the exit status (``interrupted_status``
    for a replay cut short)."""
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
        return interrupted_status
    if result.published and not result.received:
        print(f"{prog}: error: no depth output for any of the {len(result.published)} frames: does the node get "
              "a CameraInfo (or run with intrinsics_source:=moge2)? See its log and /diagnostics.", file=sys.stderr)
        return 1
    return 0


