"""One recorded bag through depth_node's per-frame processing offline, scored against its ground-truth depth
(the work of ``ppd-bag-eval``).

Each image with its CameraInfo, ground truth, sensor depth and pose (matched by stamp, ``bag_io.py``)
goes through the node's own processor (``processors.py``: decoding, model, depth mode, filters,
messages); in video mode its stream, one per bag, the frames in bag order, the last incomplete group of
K frames flushed at the end of the bag. The outputs go to a new bag (``depth/image``,
``depth/camera_info``, ``depth/points``; ``depth/uncertainty`` with uncertainty_samples > 1) and the depth
(and its uncertainty) to ``evaluation/sequence.py`` (metrics.json, frames.csv, report.html).
:func:`write_aggregate` joins several bags' results.
"""
from __future__ import annotations

import glob
import math
import shutil
import time
import traceback
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..evaluation.sequence import Evaluation, write_aggregate_report, write_json_atomic
from ..inference.checkpoints import CheckpointError
from ..inference.loader import LoadedModel
from .bag_io import BagError, BagFrame, BagRecorder, CameraTopics, bag_extent, camera_frames
from .interrupts import interrupted_by, signal_text, stop_signals
from .parameters import NodeSettings, load_node_model
from .processing import FrameSettings, ProcessedFrame
from .processors import FrameProcessor, make_processor

OUTPUT_TOPICS = ("/depth/image", "/depth/camera_info", "/depth/points", "/depth/uncertainty")
EXIT_CODES = {"ok": 0, "failed": 1, "bad_input": 2, "interrupted": 130}
"""Exit status per bag status; the run exits with the largest of its bags' (an interrupted run: 128 + the
signal, ``interrupts.exit_status``)."""
STOP_REQUESTED = "Ctrl-C or SIGTERM to the run"
"""What stopped a bag whose ``stop`` asked it to."""


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


def output_dirs(bags: list[Path], out: Path) -> list[Path]:
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


@dataclass(frozen=True)
class BagJob:
    """What evaluating one bag needs (picklable: sent to pool and Ray workers).

    settings: depth_node's settings. tolerance_ns: matching tolerance. start_s, end_s: image range,
    seconds after the bag's start (None = unbounded). threads: torch threads (None = torch's default).
    """

    bag: Path
    out: Path
    topics: CameraTopics
    settings: NodeSettings
    tolerance_ns: int
    start_s: float | None
    end_s: float | None
    stride: int
    storage: str
    threads: int | None = None


@lru_cache(maxsize=1)
def _model(settings: NodeSettings) -> tuple[LoadedModel, NodeSettings]:
    """``load_node_model`` of the settings, kept for the next bag of the same worker process."""
    return load_node_model(settings)


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


def _record(recorder: BagRecorder, evaluation: Evaluation, removed: Counter, frame: BagFrame,
            processed: ProcessedFrame) -> None:
    """One processed frame into the output bag (at its image's stamp) and the evaluation (with its
    uncertainty, if any); ``removed`` counts the pixels of the uncertainty filter."""
    messages = (processed.depth_msg, processed.info_msg, processed.points_msg, processed.uncertainty_msg)
    for topic, msg in zip(OUTPUT_TOPICS, messages):
        if msg is not None:
            recorder.write(topic, msg, frame.stamp_ns)
    removed["uncertain pixels"] += processed.uncertain_pixels_removed
    evaluation.add(frame.stamp_ns, processed.rgb, frame.gt_depth, processed.K, processed.depth, processed.is_metric,
                   frame.pose, {**processed.stages_ms, "messages_ms": processed.messages_ms},
                   uncertainty=processed.uncertainty)


def _process_frame(frame: BagFrame, processor: FrameProcessor, settings: FrameSettings,
                   record: Callable[[BagFrame, ProcessedFrame], None], tolerance_ns: int) -> str | None:
    """One frame through the node's path to ``record``: in video mode, the frames the stream returns for
    it (possibly none, or several); why it was rejected, or None."""
    camera_info = settings.node.intrinsics_source == "camera_info"
    if camera_info and frame.camera_info is None:
        return f"no CameraInfo within {tolerance_ns / 1e6:g} ms"
    return processor.push(frame, frame.image, frame.camera_info if camera_info else None, settings, record,
                          sparse=frame.sparse)


def bag_result(job: BagJob, status: str, message: str) -> dict:
    """The result of a bag with nothing evaluated (yet), in :func:`evaluate_bag`'s form."""
    return {"name": job.out.name, "status": status, "message": message, "summary": None, "report": None,
            "model": "", "frames": 0, "seconds": 0.0}


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
        stop: asked before each frame; True stops the bag as interrupted (as Ctrl-C and SIGTERM do).

    Returns:
        ``{"name", "status" (a key of EXIT_CODES), "message", "summary" (or None), "report" (relative to
        ``job.out``'s parent, or None), "model", "frames", "seconds"}``.
    """
    started = time.perf_counter()
    result = bag_result(job, "ok", "")
    if job.threads:
        torch.set_num_threads(job.threads)
    try:
        loaded, node = _model(job.settings)
    except (CheckpointError, ValueError, OSError) as error:
        return {**result, "status": "bad_input", "message": f"cannot load the model: {error}"}
    result["model"] = loaded.name
    settings, processor = FrameSettings.of(node), make_processor(loaded, node)
    evaluation = Evaluation(f"ppd-bag-eval: {job.bag.name}")
    start_ns, count = _bag_info(job.bag, job.topics.image)
    bounds = [None if s is None or start_ns is None else start_ns + round(s * 1e9) for s in (job.start_s, job.end_s)]
    total = math.ceil(count / job.stride) if count is not None and job.start_s is None and job.end_s is None else None
    rejected: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    recorder = None
    with ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=total, unit="frame", desc=job.bag.name, disable=not progress,
                                       dynamic_ncols=True))
        try:
            for frame in camera_frames(job.bag, job.topics, job.tolerance_ns, *bounds, job.stride):
                if stop is not None and stop():
                    raise KeyboardInterrupt(STOP_REQUESTED)
                if recorder is None:
                    recorder = _open_outputs(job, stack)
                    record = partial(_record, recorder, evaluation, removed)
                reason = _process_frame(frame, processor, settings, record, job.tolerance_ns)
                if reason:
                    rejected[reason] += 1
                bar.update()
            if recorder is not None:
                processor.flush(settings, record)  # video mode: the last group of fewer than K frames
        except KeyboardInterrupt as error:
            result.update(status="interrupted", message=f"interrupted ({interrupted_by(error)})")
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
    result["frames"] = len(evaluation.frames) + sum(rejected.values()) + processor.dropped + processor.pending
    notes = _notes(job, node, result, rejected, recorder.counts, removed["uncertain pixels"])
    notes.update(processor.notes())
    with stop_signals(_later) as interrupted:  # the report is written whole
        summary = evaluation.write(job.out, complete=result["status"] == "ok", notes=notes)
    if interrupted and result["status"] == "ok":  # the bag is complete; the run stops
        result.update(status="interrupted",
                      message=f"interrupted ({signal_text(interrupted[0])}) while writing its complete report")
    return {**result, "summary": summary, "report": f"{job.out.name}/report.html"}


def _notes(job: BagJob, node: NodeSettings, result: dict, rejected: Counter, counts: dict[str, int],
           uncertain_removed: int = 0) -> dict:
    """The report's key/value lines about the run of one bag."""
    topics = ", ".join(f"{role} {topic}" for role, topic in vars(job.topics).items() if topic and role != "pose_frames")
    size = "" if node.mode == "video" else f", target area {node.target_area} px"
    uncertainty = {}
    if node.uncertainty_samples > 1:
        threshold = node.uncertainty_threshold
        uncertainty["uncertainty"] = f"{node.uncertainty_samples} samples per frame, " + (
            f"threshold {threshold:g}: {uncertain_removed} pixels removed" if threshold > 0 else "no threshold")
    return {"bag": str(job.bag), "status": result["message"] or "complete", "model": result["model"],
            "mode": node.mode, "depth mode": node.depth_mode,
            "inference": f"{node.device} {node.dtype}, {node.steps} steps{size}", **uncertainty,
            "topics": topics, "frames read": str(result["frames"]), "frames rejected": str(sum(rejected.values())),
            **{f"rejected: {reason}": str(n) for reason, n in rejected.items()},
            "output bag": f"{job.out / 'depth_bag'}: " + ", ".join(f"{t} {n}" for t, n in counts.items()),
            "elapsed": f"{result['seconds']:.1f} s ({result['frames'] / max(result['seconds'], 1e-9):.2f} frames/s)"}


def _later(signum: int) -> None:
    """A ``stop_signals`` action for a block written whole: nothing now (the block's list records it)."""


def write_aggregate(out: Path, title: str, results: list[dict]) -> tuple[dict, bool]:
    """``out/report.html`` over the bags' results and ``out/metrics.json`` (the aggregate and each bag's
    status, message, summary and report), written whole even on Ctrl-C or SIGTERM.

    Returns:
        The aggregate summary (``write_aggregate_report``'s), and whether Ctrl-C or SIGTERM came while writing.
    """
    out.mkdir(parents=True, exist_ok=True)
    with stop_signals(_later) as interrupted:
        aggregate = write_aggregate_report(out / "report.html", title, results)
        write_json_atomic(out / "metrics.json", {
            "complete": all(r["status"] == "ok" for r in results), "aggregate": aggregate,
            "bags": {r["name"]: {k: r[k] for k in ("status", "message", "summary", "report")} for r in results}})
    return aggregate, bool(interrupted)
