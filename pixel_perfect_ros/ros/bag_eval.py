"""``ppd-bag-eval``: the node's per-frame processing over recorded bags, scored against ground-truth depth.

Per bag (``ros/bag_io.py`` reads it): each image with its CameraInfo, ground truth, sensor depth and pose
(matched by stamp) goes through ``FrameProcessor`` (the node's own path: decoding, model, depth mode,
filters, messages), or in video mode through ``VideoFrameProcessor`` (the node's stream, one per bag, the
frames in bag order; the last incomplete group of K frames is flushed at the end of the bag); the outputs
go to a new bag (``depth/image``, ``depth/camera_info``,
``depth/points``) and the depth to ``evaluation/sequence.py`` (metrics.json, frames.csv, report.html).
Several bags run in a process pool, or on a Ray cluster with ``--ray``, and get one aggregated report.

Exit status: 0 every bag evaluated; 1 a bag failed while processing; 2 bad arguments or an unusable bag
(missing or mistyped topic, unreadable or corrupt file, no images in range); 130 interrupted (Ctrl-C:
each bag's output bag is closed and valid, its report written and marked incomplete).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, Iterator

import ray
import torch
import yaml
from tqdm import tqdm

from ..inference.checkpoints import CheckpointError
from ..inference.pipeline import PixelPerfectDepth
from ..inference.video_pipeline import PixelPerfectVideoDepth
from ..tools.cli import non_negative_float, parameter_assignment, positive_int
from ..evaluation.sequence import Evaluation, headline_rows, write_aggregate_report, write_json_atomic
from ..evaluation.report import markdown_table
from .bag_io import STORAGES, BagError, BagFrame, BagRecorder, CameraTopics, bag_extent, camera_frames
from .conversions import ConversionError
from .parameters import PARAMETERS, SPECS, check_parameters
from .processing import (
    FrameProcessor,
    ProcessedFrame,
    Settings,
    VideoFrameProcessor,
    load_pipeline,
    load_video_model,
    model_id,
    video_stream,
)

OUTPUT_TOPICS = ("/depth/image", "/depth/camera_info", "/depth/points")
EXIT_CODES = {"ok": 0, "failed": 1, "bad_input": 2, "interrupted": 130}
"""Exit status per bag status; the run exits with the largest of its bags'."""
NODE_NAMES = ("**", "*", "depth_node")
"""Node names (the last part of a params-file key) whose ``ros__parameters`` apply."""


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppd-bag-eval", description="Run depth_node's processing over rosbag2 bags (sqlite3 or MCAP) offline: "
        "a depth bag and a report scored against the bags' ground-truth depth.")
    parser.add_argument("bags", nargs="+", metavar="BAG_OR_DIR_OR_GLOB",
                        help="a bag (folder with metadata.yaml), a folder of bags, or a glob")
    parser.add_argument("--out", type=Path, required=True, help="output folder: <bag>/{depth_bag,metrics.json,"
                        "frames.csv,report.html}, and report.html over all bags when there are several")
    topics = parser.add_argument_group("topics")
    topics.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    topics.add_argument("--camera-info-topic",
                        help="sensor_msgs/CameraInfo (needed unless -p intrinsics_source:=moge2)")
    topics.add_argument("--depth-topic", help="ground-truth depth, sensor_msgs/Image 32FC1 (m) or 16UC1 (mm), "
                        "registered to the camera, any resolution (without it nothing is scored)")
    topics.add_argument("--sparse-topic", help="metric sensor depth for -p depth_mode:=sparse_topic")
    topics.add_argument("--pose-topic", help="camera poses for the temporal alignment error: PoseStamped, "
                        "TransformStamped, or tf2_msgs/TFMessage with --pose-frames")
    topics.add_argument("--pose-frames", nargs=2, metavar=("PARENT", "CHILD"),
                        help="the transform to take from a tf topic")
    selection = parser.add_argument_group("frames")
    selection.add_argument("--tolerance-ms", type=non_negative_float, default=5.0,
                           help="largest stamp difference of a match between topics (default: 5)")
    selection.add_argument("--start", type=non_negative_float, metavar="S",
                           help="first image: seconds after the bag's start")
    selection.add_argument("--end", type=non_negative_float, metavar="S",
                           help="last image: seconds after the bag's start")
    selection.add_argument("--stride", type=positive_int, default=1, help="every N-th image (default: 1)")
    node = parser.add_argument_group("node parameters")
    node.add_argument("--params-file", type=Path, help="ROS 2 parameters YAML (as config/depth.yaml)")
    node.add_argument("-p", dest="params", type=parameter_assignment, action="append", default=[], metavar="NAME:=VALUE",
                      help="a node parameter, after the params file (repeatable)")
    run = parser.add_argument_group("running")
    run.add_argument("--jobs", type=positive_int, help="bags evaluated in parallel (default: min(bags, CPUs))")
    run.add_argument("--ray", metavar="ADDRESS", help="spread the bags over this existing Ray cluster (e.g. 'auto' "
                     "or 'host:6379'); every node needs this package, and the bags and --out at the same paths")
    run.add_argument("--storage", choices=tuple(STORAGES), default="sqlite3",
                     help="of the output bags (default: sqlite3)")
    return parser


def node_parameters(params_file: Path | None, overrides: list[tuple[str, str]]) -> dict[str, Any]:
    """depth_node's parameter values: the defaults, then the params file's, then the (name, value text)
    overrides (``-p NAME:=VALUE``, value text read as YAML).

    Raises:
        ValueError: an unreadable params file, an unknown name (the message lists the valid ones), a value
            of the wrong type, or values ``check_parameters`` rejects.
    """
    given: dict[str, Any] = {}
    if params_file is not None:
        given.update(_params_file_values(params_file))
    for name, text in overrides:
        given[name] = yaml.safe_load(text) if text else ""
    unknown = sorted(set(given) - set(SPECS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; depth_node's are: {', '.join(SPECS)}")
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update({name: _typed(name, value) for name, value in given.items()})
    reason = check_parameters(values)
    if reason:
        raise ValueError(reason)
    return values


def _params_file_values(path: Path) -> dict[str, Any]:
    """The ``ros__parameters`` of the file's ``/**``, ``*`` and ``depth_node`` entries (any namespace)."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read the params file {path}: {error}") from error
    found: dict[str, Any] = {}

    def walk(entry, key: str) -> None:
        if not isinstance(entry, dict):
            return
        if "ros__parameters" in entry and key.rstrip("/").rsplit("/", 1)[-1] in NODE_NAMES:
            found.update(entry["ros__parameters"] or {})
        for child, value in entry.items():
            if child != "ros__parameters":
                walk(value, str(child))
    walk(document, "")
    if not found:
        raise ValueError(f"{path}: no ros__parameters for depth_node (keys '/**' or 'depth_node')")
    return found


def _typed(name: str, value: Any) -> Any:
    """``value`` as the type of the parameter's default (an int is accepted for a float), or ValueError."""
    default = SPECS[name].default
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok, value = isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    elif isinstance(default, str):
        ok, value = value is not None, str(value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"parameter {name} takes a {type(default).__name__}, got {value!r}")
    return value


def find_bags(specs: list[str]) -> list[Path]:
    """Bag folders named by ``specs``: a bag (a folder with metadata.yaml), a folder whose sub-folders
    are bags, or a glob of either. Raises ValueError for a spec that gives no bag."""
    bags: list[Path] = []
    for spec in specs:
        matches = sorted(map(Path, glob.glob(spec))) if any(c in spec for c in "*?[") else [Path(spec)]
        if not matches:
            raise ValueError(f"no file matches {spec!r}")
        for match in matches:
            if (match / "metadata.yaml").is_file():
                bags.append(match)
                continue
            inner = sorted(p for p in match.iterdir() if (p / "metadata.yaml").is_file()) if match.is_dir() else []
            if not inner:
                raise ValueError(f"{match} is not a rosbag2 bag (a folder with metadata.yaml) nor a folder of bags")
            bags += inner
    return list(dict.fromkeys(bag.resolve() for bag in bags))


# --------------------------------------------------------------------------------------------------
# One bag
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BagJob:
    """What evaluating one bag needs (picklable: sent to pool and Ray workers).

    values: depth_node parameter values. tolerance_ns: matching tolerance. start_s, end_s: image range,
    seconds after the bag's start (None = unbounded). threads: torch threads (None = torch's default).
    """

    bag: Path
    out: Path
    topics: CameraTopics
    values: dict
    tolerance_ns: int
    start_s: float | None
    end_s: float | None
    stride: int
    storage: str
    threads: int | None = None


@lru_cache(maxsize=1)
def _pipeline(values_json: str) -> tuple[PixelPerfectDepth | PixelPerfectVideoDepth, dict[str, Any]]:
    """The model of these parameter values (JSON): PPD, or PPVD in video mode; and the values as
    ``load_pipeline`` filled them. Kept for the next bag of the same worker process."""
    values = json.loads(values_json)
    return (load_video_model(values) if values["mode"] == "video" else load_pipeline(values)), values


def _bag_info(path: Path, topic: str) -> tuple[int | None, int | None]:
    """(start time ns, messages on ``topic``) from the bag's metadata; (None, None) if it cannot be read
    (``camera_frames`` then says why)."""
    try:
        return bag_extent(path, topic)
    except BagError:
        return None, None


def _open_outputs(job: BagJob, stack: ExitStack) -> BagRecorder:
    """A fresh ``job.out`` marked in progress (metrics.json ``complete: false``), and its output bag."""
    shutil.rmtree(job.out, ignore_errors=True)
    job.out.mkdir(parents=True)
    write_json_atomic(job.out / "metrics.json", {"complete": False, "status": "in progress"})
    return stack.enter_context(BagRecorder(job.out / "depth_bag", job.storage))


def _record(recorder: BagRecorder, evaluation: Evaluation, frame: BagFrame, processed: ProcessedFrame) -> None:
    """One processed frame into the output bag (at its image's stamp) and the evaluation."""
    for topic, msg in zip(OUTPUT_TOPICS, (processed.depth_msg, processed.info_msg, processed.points_msg)):
        if msg is not None:
            recorder.write(topic, msg, frame.stamp_ns)
    evaluation.add(frame.stamp_ns, processed.rgb, frame.gt_depth, processed.K, processed.depth, processed.is_metric,
                   frame.pose, {**processed.stages_ms, "messages_ms": processed.messages_ms})


def _process_frame(frame: BagFrame, processor: FrameProcessor, video: VideoFrameProcessor | None,
                   settings: Settings, record: Callable[[BagFrame, ProcessedFrame], None],
                   tolerance_ns: int) -> str | None:
    """One frame through the node's path to ``record``: in video mode, the frames the stream returns for
    it (possibly none, or several); why it was rejected, or None."""
    camera_info = settings.values["intrinsics_source"] == "camera_info"
    if camera_info and frame.camera_info is None:
        return f"no CameraInfo within {tolerance_ns / 1e6:g} ms"
    info = frame.camera_info if camera_info else None
    if video is not None:
        return video.push(frame, frame.image, info, settings, record, sparse=frame.sparse)
    try:
        processed = processor.process(frame.image, info, settings, sparse=frame.sparse)
    except ConversionError as error:
        return str(error)
    record(frame, processed)
    return None


def evaluate_bag(job: BagJob, progress: bool = False, stop: Callable[[], bool] | None = None) -> dict:
    """Run the node's processing over one bag, record its outputs and write its report.

    Outputs (created at the first image; nothing when the bag is unusable from the start): ``job.out``
    with ``depth_bag/`` (closed and valid whatever happens), ``frames.csv``, ``report.html`` and
    ``metrics.json`` (written last; ``complete: false`` until the bag is done, and for an interrupted or
    failed bag). Frames whose image cannot be decoded, or that lack a CameraInfo, are counted as rejected;
    in video mode also a frame with the stamp of the one before it. Video mode: a stamp going back resets
    the stream (the frames waiting in its group are dropped: counted as not predicted); the last
    incomplete group is flushed when the bag ends (not when it is interrupted or fails: not predicted).

    Args:
        job: the bag and settings.
        progress: show a progress bar (frames, rate, ETA) on stderr.
        stop: asked before each frame; True stops the bag as interrupted (as Ctrl-C does).

    Returns:
        ``{"name", "status" (a key of EXIT_CODES), "message", "summary" (or None), "report" (relative to
        ``job.out``'s parent, or None), "model", "frames", "seconds"}``.
    """
    started = time.perf_counter()
    result = {"name": job.out.name, "status": "ok", "message": "", "summary": None, "report": None, "model": "",
              "frames": 0, "seconds": 0.0}
    if job.threads:
        torch.set_num_threads(job.threads)
    try:
        pipeline, values = _pipeline(json.dumps(job.values, sort_keys=True))
    except (CheckpointError, ValueError, OSError) as error:
        return {**result, "status": "bad_input", "message": f"cannot load the model: {error}"}
    result["model"] = model_id(values)
    settings, processor = Settings.from_values(values), FrameProcessor(pipeline)
    video = VideoFrameProcessor(video_stream(pipeline, values), processor) if values["mode"] == "video" else None
    evaluation = Evaluation(f"ppd-bag-eval: {job.bag.name}")
    start_ns, count = _bag_info(job.bag, job.topics.image)
    bounds = [None if s is None or start_ns is None else start_ns + round(s * 1e9) for s in (job.start_s, job.end_s)]
    total = math.ceil(count / job.stride) if count is not None and job.start_s is None and job.end_s is None else None
    rejected: Counter[str] = Counter()
    recorder = None
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=total, unit="frame", desc=job.bag.name, disable=not progress,
                                       dynamic_ncols=True))
        try:
            for frame in camera_frames(job.bag, job.topics, job.tolerance_ns, *bounds, job.stride):
                if stop is not None and stop():
                    raise KeyboardInterrupt
                if recorder is None:
                    recorder = _open_outputs(job, stack)
                    record = partial(_record, recorder, evaluation)
                reason = _process_frame(frame, processor, video, settings, record, job.tolerance_ns)
                if reason:
                    rejected[reason] += 1
                bar.update()
            if video is not None and recorder is not None:
                video.flush(settings, record)  # the last group of fewer than K frames
        except KeyboardInterrupt:
            result.update(status="interrupted", message="interrupted (Ctrl-C)")
        except BagError as error:
            result.update(status="bad_input", message=str(error))
        except Exception as error:  # noqa: BLE001 - one bag's failure is reported, the others still run
            traceback.print_exc()
            result.update(status="failed", message=f"{type(error).__name__}: {error}")
    result["seconds"] = time.perf_counter() - started
    if recorder is None:  # nothing was written
        if result["status"] == "ok":
            result.update(status="bad_input", message=f"no image on {job.topics.image} in the selected range")
        return result
    not_predicted = video.dropped + video.pending if video is not None else 0
    result["frames"] = len(evaluation.frames) + sum(rejected.values()) + not_predicted
    notes = _notes(job, values, result, rejected, recorder.counts)
    if video is not None:
        notes.update(_video_notes(values, video))
    with _sigint_deferred() as interrupted:  # the report is written whole
        summary = evaluation.write(job.out, complete=result["status"] == "ok", notes=notes)
    if interrupted and result["status"] == "ok":  # the bag is complete; the run stops
        result.update(status="interrupted", message="interrupted (Ctrl-C) while writing its complete report")
    return {**result, "summary": summary, "report": f"{job.out.name}/report.html"}


def _notes(job: BagJob, values: dict[str, Any], result: dict, rejected: Counter, counts: dict[str, int]) -> dict:
    """The report's key/value lines about the run of one bag."""
    topics = ", ".join(f"{role} {topic}" for role, topic in vars(job.topics).items() if topic and role != "pose_frames")
    size = "" if values["mode"] == "video" else f", target area {values['target_area']} px"
    return {"bag": str(job.bag), "status": result["message"] or "complete", "model": result["model"],
            "mode": values["mode"], "depth mode": values["depth_mode"],
            "inference": f"{values['device']} {values['dtype']}, {values['steps']} steps{size}",
            "topics": topics, "frames read": str(result["frames"]), "frames rejected": str(sum(rejected.values())),
            **{f"rejected: {reason}": str(n) for reason, n in rejected.items()},
            "output bag": f"{job.out / 'depth_bag'}: " + ", ".join(f"{t} {n}" for t, n in counts.items()),
            "elapsed": f"{result['seconds']:.1f} s ({result['frames'] / max(result['seconds'], 1e-9):.2f} frames/s)"}


def _video_notes(values: dict[str, Any], video: VideoFrameProcessor) -> dict:
    """The report's lines about video mode: the stream's parameters, its resets and re-anchorings, and the
    frames it never returned (dropped by a reset, or left in an incomplete group when the bag stopped early)."""
    return {**{name.replace("_", " "): str(values[name]) for name in (
                "video_streaming", "video_frames_per_window", "video_keyframe_every", "video_max_scale_jump")},
            "video resets": str(video.resets), "video reanchors": str(video.stream.reanchors),
            "frames not predicted": str(video.dropped + video.pending)}


@contextmanager
def _sigint_deferred() -> Iterator[list]:
    """Within the block (in the main thread) Ctrl-C is recorded in the yielded list instead of raising."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------------------------
# Many bags
# --------------------------------------------------------------------------------------------------

_stop_event = None
"""In a pool worker: the pool's stop event, set on Ctrl-C by the main process or any worker (see ``run_pool``)."""


def _init_worker(stop_event) -> None:
    """Pool worker initializer: Ctrl-C sets the stop event (bags stop at their next frame, never mid-write)."""
    global _stop_event
    _stop_event = stop_event
    signal.signal(signal.SIGINT, lambda signum, frame: stop_event.set())


def _pool_task(job: BagJob) -> dict:
    return evaluate_bag(job, stop=_stop_event.is_set)


def _not_run(job: BagJob, status: str, message: str) -> dict:
    return {"name": job.out.name, "status": status, "message": message, "summary": None, "report": None,
            "model": "", "frames": 0, "seconds": 0.0}


def run_sequential(jobs: list[BagJob], report: Callable[[dict], None]) -> list[dict]:
    """The bags one after the other in this process (a progress bar for a single bag); Ctrl-C stops
    the current bag (written, marked incomplete) and skips the rest."""
    results = []
    for job in jobs:
        try:
            result = evaluate_bag(job, progress=len(jobs) == 1)
        except KeyboardInterrupt:  # between bags
            result = _not_run(job, "interrupted", "interrupted (Ctrl-C) before it started")
        results.append(result)
        report(result)
        if result["status"] == "interrupted":
            results += [_not_run(j, "interrupted", "not started (Ctrl-C)") for j in jobs[len(results):]]
            break
    return results


def run_pool(jobs: list[BagJob], workers: int, report: Callable[[dict], None]) -> list[dict]:
    """The bags in a pool of ``workers`` processes (spawned; torch threads shared out among them). Ctrl-C
    stops every bag at its next frame (written, marked incomplete); bags not started are not started."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [BagJob(**{**vars(job), "threads": threads}) for job in jobs]
    results: dict[int, dict] = {}
    context = multiprocessing.get_context("spawn")
    stop_event = context.Event()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(stop_event,)) as pool:
        # Workers are spawned by submit and start with Ctrl-C ignored (until _init_worker), so that one
        # still importing is not killed by it, which would break the pool.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            futures = {pool.submit(_pool_task, job): i for i, job in enumerate(jobs)}
        finally:
            signal.signal(signal.SIGINT, previous)
        try:
            for future in as_completed(futures):
                results[futures[future]] = _future_result(future, jobs[futures[future]])
                report(results[futures[future]])
        except KeyboardInterrupt:
            stop_event.set()
            for future in futures:
                future.cancel()
            wait(futures)  # the running bags close their outputs and return as interrupted
            for future, i in futures.items():
                if i not in results:
                    results[i] = (_not_run(jobs[i], "interrupted", "not started (Ctrl-C)") if future.cancelled()
                                  else _future_result(future, jobs[i]))
                    report(results[i])
    return [results[i] for i in range(len(jobs))]


def _future_result(future, job: BagJob) -> dict:
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - a worker that died (e.g. out of memory) fails its bag only
        return _not_run(job, "failed", f"worker failed: {type(error).__name__}: {error}")


def run_ray(jobs: list[BagJob], address: str, report: Callable[[dict], None]) -> list[dict]:
    """The bags as Ray tasks of ``evaluate_bag`` on the cluster at ``address`` (one CPU, or one GPU
    for a CUDA device, per bag). Ctrl-C cancels the tasks (each writes its bag as interrupted).

    Raises:
        ConnectionError: no Ray cluster at ``address``.
    """
    ray.init(address=address, logging_level="warning", configure_logging=True)
    try:
        cuda = str(jobs[0].values["device"]).startswith("cuda")
        task = ray.remote(evaluate_bag).options(num_cpus=1, num_gpus=1 if cuda else 0)
        refs = {task.remote(BagJob(**{**vars(job), "threads": 1})): i for i, job in enumerate(jobs)}
        results: dict[int, dict] = {}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results[refs[done[0]]] = _ray_result(done[0], jobs[refs[done[0]]])
                report(results[refs[done[0]]])
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
            for ref in pending:
                results[refs[ref]] = _ray_result(ref, jobs[refs[ref]])
                report(results[refs[ref]])
        return [results[i] for i in range(len(jobs))]
    finally:
        ray.shutdown()


def _ray_result(ref, job: BagJob) -> dict:
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return _not_run(job, "interrupted", "cancelled (Ctrl-C); its outputs, if any, are marked incomplete")
    except ray.exceptions.RayError as error:
        return _not_run(job, "failed", f"Ray task failed: {error}")


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

def _print_result(result: dict, index: list[int], total: int) -> None:
    """One line per finished bag, then its headline metrics."""
    index[0] += 1
    print(f"[{index[0]}/{total}] {result['name']}: {result['status']}, {result['frames']} frames in "
          f"{result['seconds']:.1f} s" + (f": {result['message']}" if result["message"] else ""), flush=True)
    if result["summary"]:
        frames = result["summary"]["frames"]
        print(f"  {frames['scored']}/{frames['total']} processed frames scored, {frames['metric']} metric; "
              f"model {result['model']}; report {result['report']}")
        _print_table(result["summary"])


def _output_dirs(bags: list[Path], out: Path) -> list[Path]:
    """``out/<bag name>`` per bag, names made unique with a suffix; ValueError if one would hold a bag."""
    dirs, seen = [], Counter()
    for bag in bags:
        seen[bag.name] += 1
        name = bag.name if seen[bag.name] == 1 else f"{bag.name}_{seen[bag.name]}"
        target = (out / name).resolve()
        if any(target == b or target in b.parents for b in bags):
            raise ValueError(f"--out {out} would overwrite the input bag {bag}: choose another output folder")
        dirs.append(target)
    return dirs


def _argument_error(args: argparse.Namespace, values: dict[str, Any]) -> str | None:
    """What is inconsistent between the arguments and the node parameters, or None."""
    if values["intrinsics_source"] == "camera_info" and not args.camera_info_topic:
        return "give --camera-info-topic, or -p intrinsics_source:=moge2 (needs a MoGe-2 model)"
    if (values["depth_mode"] == "sparse_topic") != bool(args.sparse_topic):
        return "--sparse-topic and -p depth_mode:=sparse_topic go together"
    if args.pose_frames and not args.pose_topic:
        return "--pose-frames needs --pose-topic"
    if values["mode"] == "video" and not (values["checkpoint"] and values["semantics"]):
        return ("video mode needs -p checkpoint:=<ppvd.pth> and -p semantics:=<Pi3 model.safetensors> "
                "(there is no bundled video model)")
    if args.start is not None and args.end is not None and args.end < args.start:
        return f"--end {args.end} is before --start {args.start}"
    return None


def _print_table(summary: dict) -> None:
    table = markdown_table(("mean over frames", "AbsRel", "delta1", "edge-aware chamfer (m)"), headline_rows(summary))
    print("\n".join(f"  {line}" for line in table.splitlines()), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        values = node_parameters(args.params_file, args.params)
        bags = find_bags(args.bags)
        outs = _output_dirs(bags, args.out)
    except ValueError as error:
        print(f"ppd-bag-eval: error: {error}", file=sys.stderr)
        return 2
    problem = _argument_error(args, values)
    if problem:
        print(f"ppd-bag-eval: error: {problem}", file=sys.stderr)
        return 2
    topics = CameraTopics(image=args.image_topic, camera_info=args.camera_info_topic, depth=args.depth_topic,
                          sparse=args.sparse_topic, pose=args.pose_topic,
                          pose_frames=tuple(args.pose_frames) if args.pose_frames else None)
    jobs = [BagJob(bag, out, topics, values, round(args.tolerance_ms * 1e6), args.start, args.end, args.stride,
                   args.storage) for bag, out in zip(bags, outs)]
    if not values["checkpoint"]:  # image mode (video mode needs its files)
        print("ppd-bag-eval: no checkpoint set: the bundled tiny model (trained on synthetic rooms only)",
              file=sys.stderr)
    if not args.depth_topic:
        print("ppd-bag-eval: no --depth-topic: frames are processed and recorded but not scored", file=sys.stderr)
    finished = [0]

    def report(result: dict) -> None:
        _print_result(result, finished, len(jobs))

    workers = min(args.jobs or os.cpu_count() or 1, len(jobs))
    try:
        if args.ray:
            results = run_ray(jobs, args.ray, report)
        elif workers == 1:
            results = run_sequential(jobs, report)
        else:
            results = run_pool(jobs, workers, report)
    except ConnectionError as error:
        print(f"ppd-bag-eval: error: cannot connect to the Ray cluster at {args.ray}: {error}", file=sys.stderr)
        return 2
    interrupted: list = []
    if len(jobs) > 1:
        args.out.mkdir(parents=True, exist_ok=True)
        with _sigint_deferred() as interrupted:
            aggregate = write_aggregate_report(args.out / "report.html", f"ppd-bag-eval: {len(jobs)} bags", results)
            write_json_atomic(args.out / "metrics.json", {
                "complete": all(r["status"] == "ok" for r in results), "aggregate": aggregate,
                "bags": {r["name"]: {k: r[k] for k in ("status", "message", "summary", "report")} for r in results}})
        print(f"all bags ({aggregate['frames']['scored']} scored frames): {args.out / 'report.html'}")
        _print_table(aggregate)
    for result in results:
        if result["status"] != "ok":
            print(f"ppd-bag-eval: {result['name']}: {result['status']}: {result['message']}", file=sys.stderr)
    return max(EXIT_CODES["interrupted" if interrupted else "ok"], *(EXIT_CODES[r["status"]] for r in results))


if __name__ == "__main__":
    # Run the importable module's main, not __main__'s: Ray pickles evaluate_bag by module name.
    from pixel_perfect_ros.ros import bag_eval
    sys.exit(bag_eval.main())
