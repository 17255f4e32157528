"""Depth metrics of a frame sequence against ground truth, and their report (numpy, OpenCV, matplotlib; no ROS).

:class:`Evaluation` scores each frame with both alignment protocols (the official RANSAC in
``log(1 + d)``; least squares in disparity), without alignment when the depth is metric, and with the
edge-aware chamfer distance; over the sequence it adds the temporal alignment error (when poses are
given) and the flicker, and, for frames published with an uncertainty (several diffusion samples), how well
it ranks the errors (AUSE, Spearman); it writes ``metrics.json``, ``frames.csv`` and a self-contained
``report.html``.
:func:`write_aggregate_report` joins several sequences' summaries into one report;
:func:`write_comparison_report` sets several runs over the same sequence side by side (``ppd-demo --mode
both``: the node's image and video modes). Used by ``ppd-bag-eval``, ``ppd-bag-replay`` and ``ppd-demo``.

Depth is metres along the optical axis of the camera optical frame; NaN = invalid.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..geometry.alignment import align_disparity_lsq, recover_metric_depth_ransac
from ..geometry.metrics import (
    GT_MIN_DEPTH_M,
    aligned_metrics,
    depth_metrics,
    edge_aware_chamfer,
    flicker,
    temporal_alignment_error,
)
from ..geometry.projection import back_project, scale_intrinsics
from ..geometry.uncertainty import ause, spearman
from . import report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANEL_MAX_WIDTH = 320
"""Largest width of the per-frame copies kept for the report's panels and the TAE, pixels."""
ERROR_BINS = np.linspace(0.0, 1.0, 51)
"""Bins of the error histogram, relative error ``|pred - gt| / gt``; larger errors go to the last bin."""
CLOUD_YAW_DEG = 35.0
"""Side view of the median frame's point cloud, degrees."""
PROTOCOLS = ("ransac_log", "lsq_disparity", "none")
"""Alignment protocols, as ``geometry.metrics.aligned_metrics`` names them."""
HEADLINE_KEYS = ("abs_rel", "delta_1")
"""Per-protocol metrics in the headline tables."""
FRAME_FIELDS = ("stamp_ns", "time_s", "scored", "is_metric")
"""Per-frame entries that are not metrics."""
TEMPORAL_KEYS = ("tae", "tae_metric", "flicker", "flicker_metric")
"""The temporal measures of a summary's ``"tae"`` entry."""
UNCERTAINTY_ROWS = (("uncertainty.ause_m", "uncertainty AUSE (m)"),
                    ("uncertainty.ause_random_m", "uncertainty AUSE, random order (m)"),
                    ("uncertainty.spearman", "uncertainty Spearman vs |error|"))
"""The per-frame uncertainty metrics (frames with a published uncertainty) and their headline rows."""


@dataclass
class _Panel:
    """Copies of a scored frame at the GT resolution decimated to <= PANEL_MAX_WIDTH wide.

    rgb: (h, w, 3) uint8. gt, depth, aligned: (h, w) float32 metres (depth: as published, relative units
    unless metric); aligned: RANSAC-aligned depth. K: (3, 3) of these. pose: (4, 4) T_world_from_cam or None.
    """

    index: int
    rgb: np.ndarray
    gt: np.ndarray
    depth: np.ndarray
    aligned: np.ndarray
    K: np.ndarray
    pose: np.ndarray | None


class Evaluation:
    """Per-frame depth metrics against ground truth, accumulated over a sequence, and its report.

    Args:
        title: the report's title.
        seed: seed of the RANSAC alignment (the same frame gives the same numbers).
    """

    def __init__(self, title: str, seed: int = 0):
        self.title = title
        self.seed = seed
        self.frames: list[dict] = []
        self._panels: list[_Panel] = []
        self._stages: list[str] = []  # timing names in order of appearance
        self._errors = {"ransac_log": np.zeros(len(ERROR_BINS) - 1), "none": np.zeros(len(ERROR_BINS) - 1)}

    # ----------------------------------------------------------------------------------------------
    # Scoring
    # ----------------------------------------------------------------------------------------------

    def add(self, stamp_ns: int, rgb: np.ndarray, gt: np.ndarray | None, K: np.ndarray, depth: np.ndarray,
            is_metric: bool, pose: np.ndarray | None = None, timings_ms: dict[str, float] | None = None,
            uncertainty: np.ndarray | None = None) -> dict:
        """Score one frame and keep it for the report.

        Scores: ``ransac_log`` (the official fit of ``log(1 + gt)`` on ``log1p(depth)`` when metric,
        ``log(depth)`` when relative: both affine in the model's ``n``, so the official fit is unchanged),
        ``lsq_disparity``, ``none`` (only when ``is_metric``), each with AbsRel, delta 0.5/1/2/3 and the
        fraction of GT pixels with a prediction; the edge-aware chamfer of the RANSAC-aligned depth
        (``chamfer_ransac_m``) and of the metric depth when ``is_metric`` (``chamfer_metric_m``). A frame
        with fewer than 2 GT pixels that have a prediction is counted but not scored. With ``uncertainty``:
        ``uncertainty.ause_m``, ``uncertainty.ause_random_m`` and ``uncertainty.spearman`` (``_uncertainty``).

        Args:
            stamp_ns: the frame's stamp, nanoseconds.
            rgb: (H, W, 3) uint8 RGB of the camera image.
            gt: (Hg, Wg) float ground-truth depth, metres, NaN = invalid, any resolution registered to the
                camera (``depth`` is resized to it with nearest-neighbour and ``K`` scaled); None = no GT
                (the frame is counted, not scored).
            K: (3, 3) camera matrix of ``depth``, pixels.
            depth: (h, w) float published depth: metres if ``is_metric``, else the relative ``exp(n)``;
                NaN = invalid.
            is_metric: whether ``depth`` is in metres.
            pose: (4, 4) ``T_world_from_cam`` of the frame, metres, for the temporal alignment error; None = none.
            timings_ms: processing time per stage, ms (``total_ms`` is their sum).
            uncertainty: (h, w) float published uncertainty of ``depth`` (``depth/uncertainty``: metres if
                ``is_metric``, else relative; NaN where ``depth`` is invalid, +inf where the samples disagree
                on whether there is depth); None = none.

        Returns:
            The frame's flat metrics dict (``"ransac_log.abs_rel"``, ``"chamfer_ransac_m"``, timings, ...).
        """
        start_ns = self.frames[0]["stamp_ns"] if self.frames else stamp_ns
        record = {"stamp_ns": int(stamp_ns), "time_s": (stamp_ns - start_ns) * 1e-9, "scored": False,
                  "is_metric": bool(is_metric)}
        self.frames.append(record)
        if gt is not None:
            self._score(record, rgb, gt.astype(np.float32, copy=False), K, depth, is_metric, pose, uncertainty)
        for name, value in (timings_ms or {}).items():
            record[name] = float(value)
            if name not in self._stages:
                self._stages.append(name)
        if timings_ms:
            record["total_ms"] = float(sum(timings_ms.values()))
        return record

    def _score(self, record: dict, rgb: np.ndarray, gt: np.ndarray, K: np.ndarray, depth: np.ndarray,
               is_metric: bool, pose: np.ndarray | None, uncertainty: np.ndarray | None = None) -> None:
        """Add the metrics of ``add`` to ``record`` (the last of ``frames``) and keep the frame's panel."""
        if uncertainty is not None:
            uncertainty, _ = _resize_to(uncertainty, K, gt.shape)
        depth, K = _resize_to(depth, K, gt.shape)
        valid = np.isfinite(gt) & (gt > GT_MIN_DEPTH_M)  # (Hg, Wg)
        with np.errstate(divide="ignore", invalid="ignore"):
            n_equivalent = np.log1p(depth) if is_metric else np.log(depth)  # affine in the model's n
        fit_mask = valid & np.isfinite(n_equivalent)
        if fit_mask.sum() < 2:
            return
        record["scored"] = True
        aligned = recover_metric_depth_ransac(n_equivalent, gt, fit_mask, seed=self.seed)
        record.update(_prefixed("ransac_log", depth_metrics(aligned, gt, valid)))
        record.update(_prefixed("lsq_disparity", depth_metrics(_disparity_aligned(depth, gt, valid), gt, valid)))
        record["chamfer_ransac_m"] = edge_aware_chamfer(aligned, gt, K)
        self._count_errors("ransac_log", aligned, gt, valid)
        if is_metric:
            record.update(_prefixed("none", aligned_metrics(depth, gt, valid, protocol="none")))
            record["chamfer_metric_m"] = edge_aware_chamfer(depth, gt, K)
            self._count_errors("none", depth, gt, valid)
        if uncertainty is not None:
            record.update(self._uncertainty(depth if is_metric else aligned, gt, valid, uncertainty))
        self._keep_panel(len(self.frames) - 1, rgb, gt, depth, aligned, K, pose)

    def _uncertainty(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, uncertainty: np.ndarray
                     ) -> dict[str, float]:
        """How well ``uncertainty`` ranks the absolute error ``|pred - gt|`` (metres) over the evaluated
        pixels (GT valid, a prediction and an uncertainty there): ``uncertainty.ause_m``
        (``geometry.uncertainty.ause``: 0 = ranked as the error itself), ``uncertainty.ause_random_m`` (the
        same for a seeded random order, for reference: a useful uncertainty is well below it) and
        ``uncertainty.spearman``; +inf (the samples disagree on whether there is depth) ranks as the most
        uncertain. ``pred``: the metric depth as published, or the RANSAC-aligned relative depth. NaN
        when fewer than 3 pixels qualify (Spearman also for a constant uncertainty or error)."""
        keep = valid & np.isfinite(pred) & ~np.isnan(uncertainty)
        names = [key for key, _ in UNCERTAINTY_ROWS]
        if keep.sum() < 3:
            return dict.fromkeys(names, math.nan)
        error = np.abs(pred[keep] - gt[keep]).astype(np.float64)
        score = uncertainty[keep].astype(np.float64)  # +inf ranks first
        order = np.random.default_rng(self.seed).random(error.shape)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's warning for a constant input: NaN
            correlation = spearman(error, score)
        return dict(zip(names, (ause(error, score), ause(error, order), correlation)))

    def _count_errors(self, protocol: str, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> None:
        """Add the frame's relative errors ``|pred - gt| / gt`` on valid pixels to the protocol's histogram."""
        ok = valid & np.isfinite(pred)
        error = np.abs(pred[ok] - gt[ok]) / gt[ok]
        self._errors[protocol] += np.histogram(np.minimum(error, ERROR_BINS[-1]), ERROR_BINS)[0]

    def _keep_panel(self, index: int, rgb: np.ndarray, gt: np.ndarray, depth: np.ndarray, aligned: np.ndarray,
                    K: np.ndarray, pose: np.ndarray | None) -> None:
        """Keep the frame decimated to at most PANEL_MAX_WIDTH wide (GT resolution in, K scaled)."""
        step = math.ceil(gt.shape[1] / PANEL_MAX_WIDTH)
        gt_small = gt[::step, ::step]  # (h, w) decimation from pixel 0: exact intrinsics scaling
        K_small, _ = scale_intrinsics(K, np.hstack([K, np.zeros((3, 1))]), 1.0 / step, 1.0 / step)
        rgb_small = cv2.resize(rgb, gt_small.shape[::-1], interpolation=cv2.INTER_AREA)
        self._panels.append(_Panel(index, rgb_small, gt_small.copy(), depth[::step, ::step].copy(),
                                   aligned[::step, ::step].copy(), K_small, None if pose is None else np.asarray(pose)))

    # ----------------------------------------------------------------------------------------------
    # Summary
    # ----------------------------------------------------------------------------------------------

    @property
    def headline(self) -> str:
        """The protocol that ranks frames and colours the panels: ``none`` when every scored frame is
        metric (the metric depth as published), else ``ransac_log``."""
        scored = [f for f in self.frames if f["scored"]]
        return "none" if scored and all(f["is_metric"] for f in scored) else "ransac_log"

    def summary(self) -> dict:
        """Aggregates over the frames so far.

        Returns:
            ``{"title", "frames": {"total", "scored", "unscored", "metric"}, "headline": protocol,
            "metrics": {name: {"mean", "median", "count"}}`` (NaN-ignoring, over the frames that have the
            metric: scored frames for scores, all frames for timings) ``, "tae": {"tae", "tae_metric",
            "flicker", "flicker_metric", "frames"} or None}`` (the temporal measures, fractions, on the
            frames with GT and poses at the panel resolution: TAE as Video Depth Anything's script, and
            ``geometry.metrics.flicker``; ``tae`` and ``flicker`` after one least-squares disparity
            alignment of the whole clip, ``*_metric`` of the metric depth as published when every such
            frame is metric).
        """
        names = [key for frame in self.frames for key in frame if key not in FRAME_FIELDS]
        metrics = {}
        for name in dict.fromkeys(names):
            values = np.array([f[name] for f in self.frames if name in f], dtype=np.float64)
            finite = values[np.isfinite(values)]
            metrics[name] = {"mean": float(finite.mean()) if finite.size else math.nan,
                             "median": float(np.median(finite)) if finite.size else math.nan,
                             "count": int(finite.size)}
        scored = sum(f["scored"] for f in self.frames)
        return {"title": self.title,
                "frames": {"total": len(self.frames), "scored": scored, "unscored": len(self.frames) - scored,
                           "metric": sum(f["is_metric"] for f in self.frames)},
                "headline": self.headline, "metrics": metrics, "tae": self._tae()}

    def _tae(self) -> dict | None:
        panels = [p for p in self._panels if p.pose is not None and p.gt.shape == self._panels[0].gt.shape]
        if len(panels) < 2:
            return None
        gt = np.stack([p.gt for p in panels])  # (T, h, w)
        depth = np.stack([p.depth for p in panels])
        masks = np.isfinite(gt) & (gt > GT_MIN_DEPTH_M)
        poses = np.stack([p.pose for p in panels])  # (T, 4, 4)
        K = panels[0].K
        clip_aligned = _disparity_aligned(depth, gt, masks)  # one scale and shift per clip, as VDA
        metric = all(self.frames[p.index]["is_metric"] for p in panels)
        return {"tae": temporal_alignment_error(clip_aligned, poses, K, masks),
                "tae_metric": temporal_alignment_error(depth, poses, K, masks) if metric else math.nan,
                "flicker": flicker(clip_aligned, gt), "flicker_metric": flicker(depth, gt) if metric else math.nan,
                "frames": len(panels)}

    # ----------------------------------------------------------------------------------------------
    # Output
    # ----------------------------------------------------------------------------------------------

    def write(self, out_dir: Path, *, complete: bool = True, notes: dict[str, str] | None = None) -> dict:
        """Write ``out_dir/frames.csv``, ``report.html`` and, last and atomically, ``metrics.json``.

        metrics.json: ``{"complete", "notes", "summary", "frames"}``. report.html is self-contained (plots
        as base64 PNG): notes, headline and full metric tables, metrics and stage times over time, the
        error histogram, worst/median/best frame strips (RGB | GT | prediction | relative error), a
        point-cloud view of the median frame beside the GT's; an INCOMPLETE banner when ``complete`` is False.

        Args:
            out_dir: folder, created if missing.
            complete: False when the sequence was cut short (interrupted, or an error part-way).
            notes: key/value lines for the report (model, depth mode, bag, dropped frames, ...).

        Returns:
            The summary.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        notes = dict(notes or {})
        summary = self.summary()
        fields = list(dict.fromkeys(key for frame in self.frames for key in frame))
        with open(out_dir / "frames.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fields, restval="")
            writer.writeheader()
            writer.writerows(self.frames)
        (out_dir / "report.html").write_text(self._html(summary, complete, notes))
        write_json_atomic(out_dir / "metrics.json", {"complete": complete, "notes": notes, "summary": summary,
                                                     "frames": self.frames})
        return summary

    def _html(self, summary: dict, complete: bool, notes: dict[str, str]) -> str:
        parts = [f"<h1>{html.escape(self.title)}</h1>"]
        if not complete:
            parts.append('<p class="banner">INCOMPLETE: the evaluation stopped early; the numbers cover the '
                         f'{len(self.frames)} frames processed before it stopped.</p>')
        parts += [_table(("run", ""), list(notes.items())), "<h2>Summary</h2>", summary_html(summary)]
        if self.frames:
            parts += ["<h2>Over time</h2>", _img(_figure_png(self.overview_figure()))]
        scored = [(self.frames[p.index][f"{self.headline}.abs_rel"], p) for p in self._panels]
        scored = [(value, p) for value, p in scored if np.isfinite(value)]
        if scored:
            scored.sort(key=lambda item: item[0])
            picks = {"worst": scored[-1], "median": scored[len(scored) // 2], "best": scored[0]}
            parts.append(f"<h2>Frames (ranked by {self.headline} AbsRel)</h2>")
            for name, (value, panel) in picks.items():
                parts.append(f"<h3>{name}: frame {panel.index}, t = {self.frames[panel.index]['time_s']:.2f} s, "
                             f"AbsRel {value:.4f}</h3>" + _img(_png(self._strip(panel))))
            parts += [f"<h2>Point cloud of the median frame (seen from {CLOUD_YAW_DEG:.0f} degrees to the side)</h2>",
                      _img(_png(self._cloud(picks["median"][1])))]
        rows = [(name, v["mean"], v["median"], v["count"]) for name, v in summary["metrics"].items()]
        parts += ["<h2>All metrics</h2>", _table(("metric", "mean", "median", "frames"), rows), DEFINITIONS]
        return _page(self.title, parts)

    def _prediction(self, panel: _Panel) -> np.ndarray:
        """The panel's depth as ranked: metric as published (headline ``none``) or RANSAC-aligned."""
        return panel.depth if self.headline == "none" else panel.aligned

    def _strip(self, panel: _Panel) -> np.ndarray:
        return report.depth_strip(panel.rgb, panel.gt, self._prediction(panel))

    def _cloud(self, panel: _Panel) -> np.ndarray:
        fx, fy, cx, cy = panel.K[0, 0], panel.K[1, 1], panel.K[0, 2], panel.K[1, 2]
        gt_points = back_project(panel.gt, fx, fy, cx, cy)  # (h, w, 3) optical frame, metres
        points = back_project(self._prediction(panel).astype(np.float32), fx, fy, cx, cy)
        pivot = np.nanmedian(gt_points.reshape(-1, 3), axis=0)
        label = "prediction (metric)" if self.headline == "none" else "prediction (RANSAC-aligned)"
        return np.hstack([report.cloud_view(points, panel.rgb, pivot, CLOUD_YAW_DEG, label),
                          report.cloud_view(gt_points, panel.rgb, pivot, CLOUD_YAW_DEG, "ground truth")])

    def overview_figure(self) -> Figure:
        """AbsRel and delta1 per protocol, processing time per stage (stacked) over time, and the
        histogram of the headline protocol's relative error over all scored pixels."""
        from matplotlib.figure import Figure  # matplotlib is imported only when a report is drawn

        figure = Figure(figsize=(11, 7), layout="constrained")
        axes = figure.subplots(2, 2)
        times = np.array([f["time_s"] for f in self.frames])
        for ax, key, title in ((axes[0, 0], "abs_rel", "AbsRel (lower is better)"),
                               (axes[0, 1], "delta_1", "delta1 (higher is better)")):
            for protocol in PROTOCOLS:
                values = np.array([f.get(f"{protocol}.{key}", np.nan) for f in self.frames])
                if np.isfinite(values).any():
                    ax.plot(times, values, ".-", label=protocol)
            ax.set(title=title, xlabel="time (s)")
            ax.grid(alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=8)
        ax = axes[1, 0]
        if self._stages:
            stacks = [[f.get(name, np.nan) for f in self.frames] for name in self._stages]
            ax.stackplot(times, np.nan_to_num(np.array(stacks)), labels=self._stages)
            ax.legend(fontsize=8, loc="upper right")
        ax.set(title="processing time per stage (ms)", xlabel="time (s)")
        ax.grid(alpha=0.3)
        ax = axes[1, 1]
        counts = self._errors[self.headline]
        fractions = counts / max(counts.sum(), 1.0)
        ax.bar(ERROR_BINS[:-1], fractions, width=np.diff(ERROR_BINS), align="edge")
        ax.set(title=f"relative error |pred - gt| / gt, {self.headline} (last bin: >= {ERROR_BINS[-2]:.2f})",
               xlabel="relative error", ylabel="fraction of pixels")
        ax.grid(alpha=0.3)
        figure.suptitle(self.title)
        return figure


# --------------------------------------------------------------------------------------------------
# Several sequences
# --------------------------------------------------------------------------------------------------

def aggregate_summaries(summaries: list[dict]) -> dict:
    """One summary over several: frame counts summed, each metric's mean weighted by its frame count
    (the mean over all frames), the temporal measures (TAE, flicker) weighted by their frames; medians are
    not combined (NaN).

    Args:
        summaries: ``Evaluation.summary()`` dicts.
    """
    frames = {key: sum(s["frames"][key] for s in summaries) for key in ("total", "scored", "unscored", "metric")}
    names = dict.fromkeys(name for s in summaries for name in s["metrics"])
    metrics = {}
    for name in names:
        entries = [s["metrics"][name] for s in summaries if s["metrics"].get(name, {}).get("count")]
        count = sum(e["count"] for e in entries)
        mean = sum(e["mean"] * e["count"] for e in entries) / count if count else math.nan
        metrics[name] = {"mean": mean, "median": math.nan, "count": count}
    taes = [s["tae"] for s in summaries if s["tae"]]
    tae = None
    if taes:
        total = sum(t["frames"] for t in taes)
        tae = {key: sum(t[key] * t["frames"] for t in taes) / total for key in TEMPORAL_KEYS}
        tae["frames"] = total
    headline = "none" if summaries and all(s["headline"] == "none" for s in summaries) else "ransac_log"
    return {"title": "all bags", "frames": frames, "headline": headline, "metrics": metrics, "tae": tae}


def write_aggregate_report(path: Path, title: str, bags: list[dict]) -> dict:
    """One HTML report over several sequences: the aggregate, a per-bag table and chart, a section per bag.

    Args:
        path: the HTML file to write.
        title: its title.
        bags: per sequence ``{"name", "status" ("ok", "interrupted", "failed", ...), "message",
            "summary" (``Evaluation.summary()`` or None), "report" (path of its report.html relative to
            ``path``'s folder, or None)}``.

    Returns:
        The aggregate summary (:func:`aggregate_summaries` of the bags with a summary).
    """
    done = [b for b in bags if b["summary"]]
    aggregate = aggregate_summaries([b["summary"] for b in done])
    rows = []
    for b in bags:
        metrics = b["summary"]["metrics"] if b["summary"] else {}
        rows.append((b["name"], b["status"], b["summary"]["frames"]["scored"] if b["summary"] else 0,
                     *(metrics.get(f"{p}.abs_rel", {}).get("mean", math.nan) for p in PROTOCOLS)))
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if any(b["status"] != "ok" for b in bags):
        parts.append(f'<p class="banner">INCOMPLETE: {sum(b["status"] != "ok" for b in bags)} of {len(bags)} '
                     "bags did not finish (see their sections).</p>")
    parts += [f"<h2>All bags (mean over the frames of {len(done)} bags)</h2>", summary_html(aggregate),
              "<h2>Per bag</h2>",
              _table(("bag", "status", "scored frames", *(f"AbsRel {p}" for p in PROTOCOLS)), rows)]
    if done:
        parts.append(_img(_figure_png(_bags_figure(done))))
    for b in bags:
        parts.append(f'<h2 id="{html.escape(b["name"])}">{html.escape(b["name"])}: {html.escape(b["status"])}</h2>')
        if b["message"]:
            parts.append(f"<pre>{html.escape(b['message'])}</pre>")
        if b["summary"]:
            parts.append(summary_html(b["summary"]))
        if b["report"]:
            parts.append(f'<p><a href="{html.escape(b["report"])}">full report</a></p>')
    parts.append(DEFINITIONS)
    Path(path).write_text(_page(title, parts))
    return aggregate


def _bags_figure(bags: list[dict]) -> Figure:
    """Mean AbsRel and delta1 per bag and protocol, as grouped bars."""
    from matplotlib.figure import Figure  # matplotlib is imported only when a report is drawn

    figure = Figure(figsize=(11, 3.5), layout="constrained")
    x = np.arange(len(bags))
    for ax, key in zip(figure.subplots(1, 2), HEADLINE_KEYS):
        for i, protocol in enumerate(PROTOCOLS):
            values = [b["summary"]["metrics"].get(f"{protocol}.{key}", {}).get("mean", math.nan) for b in bags]
            ax.bar(x + 0.27 * (i - 1), values, width=0.27, label=protocol)
        ax.set_xticks(x, [b["name"] for b in bags], rotation=20, fontsize=8)
        ax.set(title=f"mean {key} per bag")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return figure


# --------------------------------------------------------------------------------------------------
# One sequence, several runs
# --------------------------------------------------------------------------------------------------

def comparison_rows(summaries: dict[str, dict]) -> list[tuple]:
    """A row per quantity and a column per run: scored frames, the ``headline_rows`` (AbsRel, delta1 and
    edge-aware chamfer per protocol, then the temporal rows: TAE and flicker, and any measure added there),
    the mean time per frame in the node; '' where a run lacks a quantity.

    Args:
        summaries: per run name, its ``Evaluation.summary()``.
    """
    cells: dict[str, dict[str, object]] = {}
    for run, summary in summaries.items():
        values: dict[str, object] = {"frames scored": summary["frames"]["scored"]}
        for name, value, delta_1, chamfer_m in headline_rows(summary):
            if delta_1 == "":  # a temporal row: one value
                values[name] = value
                continue
            values.update({f"{name} AbsRel": value, f"{name} delta1": delta_1})
            if chamfer_m != "":
                values[f"{name} edge-aware chamfer (m)"] = chamfer_m
        if "total_ms" in summary["metrics"]:
            values["time per frame (mean ms)"] = summary["metrics"]["total_ms"]["mean"]
        for name, value in values.items():
            cells.setdefault(name, {})[run] = value
    return [(name, *(row.get(run, "") for run in summaries)) for name, row in cells.items()]


def write_comparison_report(out_dir: Path, title: str, runs: dict[str, Path]) -> dict[str, dict]:
    """One report of several runs over the same sequence, side by side (a column per run).

    Reads each run's ``metrics.json`` (``Evaluation.write``) and writes ``out_dir/report.html``: the notes the
    runs share, the ``comparison_rows`` table, the headline AbsRel and the time per frame over time, the
    runs' other notes side by side, a link to each run's own report; and, last and atomically,
    ``out_dir/metrics.json``: ``{"complete", "notes" (the shared ones), "runs": {name: summary}}``.

    Args:
        out_dir: folder, created if missing.
        title: the report's title.
        runs: per run name, its report folder (``metrics.json``, ``report.html``).

    Returns:
        The summary per run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {name: json.loads((folder / "metrics.json").read_text()) for name, folder in runs.items()}
    summaries = {name: _summary_from_json(result["summary"]) for name, result in results.items()}
    complete = all(result["complete"] for result in results.values())
    run_notes = {key: [result["notes"].get(key, "") for result in results.values()]
                 for key in dict.fromkeys(key for result in results.values() for key in result["notes"])}
    shared = {key: values[0] for key, values in run_notes.items() if len(set(values)) == 1}
    links = [f'<a href="{html.escape(os.path.relpath(folder / "report.html", out_dir))}">{html.escape(name)}</a>'
             for name, folder in runs.items()]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if not complete:
        parts.append('<p class="banner">INCOMPLETE: a run stopped early (see its report).</p>')
    parts += [_table(("run", ""), list(shared.items())), "<h2>Side by side</h2>",
              _table(("mean over frames", *runs), comparison_rows(summaries)),
              _img(_figure_png(_runs_figure(results))), "<h2>Runs</h2>",
              _table(("", *runs), [(key, *values) for key, values in run_notes.items() if key not in shared]),
              f"<p>Full reports: {' | '.join(links)}</p>", DEFINITIONS]
    (out_dir / "report.html").write_text(_page(title, parts))
    write_json_atomic(out_dir / "metrics.json", {"complete": complete, "notes": shared, "runs": summaries})
    return summaries


def _runs_figure(results: dict[str, dict]) -> Figure:
    """Per run (its ``metrics.json``): its headline AbsRel and its time per frame over time."""
    from matplotlib.figure import Figure  # matplotlib is imported only when a report is drawn

    figure = Figure(figsize=(11, 3.5), layout="constrained")
    accuracy, timing = figure.subplots(1, 2)
    for name, result in results.items():
        frames, headline = result["frames"], result["summary"]["headline"]
        times = _column(frames, "time_s")
        accuracy.plot(times, _column(frames, f"{headline}.abs_rel"), ".-", label=f"{name} ({headline})")
        timing.plot(times, _column(frames, "total_ms"), ".-", label=name)
    for ax, title in ((accuracy, "AbsRel (lower is better)"), (timing, "time per frame in the node (ms)")):
        ax.set(title=title, xlabel="time (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure


# --------------------------------------------------------------------------------------------------
# Tables and HTML
# --------------------------------------------------------------------------------------------------

def headline_rows(summary: dict) -> list[tuple]:
    """(protocol, mean AbsRel, mean delta1, mean chamfer m) per protocol present in a summary, then the temporal
    rows (name, value, '', ''): TAE and flicker of the clip-aligned depth, and of the metric depth when there is."""
    metrics = summary["metrics"]
    chamfer = {"ransac_log": "chamfer_ransac_m", "none": "chamfer_metric_m"}
    rows = []
    for protocol in PROTOCOLS:
        if f"{protocol}.abs_rel" in metrics:
            rows.append((protocol, *(metrics[f"{protocol}.{key}"]["mean"] for key in HEADLINE_KEYS),
                         metrics.get(chamfer.get(protocol, ""), {}).get("mean", "")))
    temporal = summary["tae"]
    if temporal:
        for key, name in (("tae", "TAE"), ("flicker", "flicker")):
            rows.append((f"{name} (clip lsq disparity)", temporal[key], "", ""))
            if math.isfinite(temporal[f"{key}_metric"]):
                rows.append((f"{name} (metric as published)", temporal[f"{key}_metric"], "", ""))
    rows += [(name, metrics[key]["mean"], "", "") for key, name in UNCERTAINTY_ROWS if key in metrics]
    return rows


def summary_html(summary: dict) -> str:
    """Frame counts, the headline table and mean stage times of a summary, as HTML."""
    frames = summary["frames"]
    counts = (f"<p>{frames['total']} frames, {frames['scored']} scored against ground truth, {frames['unscored']} "
              f"without usable ground truth, {frames['metric']} metric.</p>")
    headline = _table(("protocol", "AbsRel", "delta1", "edge-aware chamfer (m)"), headline_rows(summary))
    timing = [(name, v["mean"], v["median"]) for name, v in summary["metrics"].items() if name.endswith("_ms")]
    return counts + headline + (_table(("stage", "mean ms", "median ms"), timing) if timing else "")


def write_json_atomic(path: Path, value) -> None:
    """``value`` as JSON (non-finite floats as null) to ``path`` through a temporary file and a rename."""
    temporary = Path(f"{path}.tmp")
    temporary.write_text(json.dumps(report.json_safe(value), indent=1))
    os.replace(temporary, path)


DEFINITIONS = """<h2>What the numbers mean</h2><ul>
<li><b>ransac_log</b>: PPD's official protocol: per frame, log(1 + gt) = a x + b fitted by RANSAC (MAD threshold,
seeded) on the GT pixels, x = log(1 + depth) for metric and log(depth) for relative depth (both affine in the
model's output), then clipped to [1 mm, max GT].</li>
<li><b>lsq_disparity</b>: the video-depth protocol: one least-squares scale and shift of 1/depth to 1/gt per frame.</li>
<li><b>none</b>: metric depth as published, no alignment (only for frames in a metric depth mode).</li>
<li><b>AbsRel</b> = mean |pred - gt| / gt; <b>delta_k</b> = fraction of pixels with max(pred/gt, gt/pred) &lt; 1.25^k;
on GT pixels &gt; 1 mm (valid_frac: the fraction of those with a prediction).</li>
<li><b>edge-aware chamfer</b> (m): symmetric mean nearest-neighbour distance of the predicted and GT 3D points in a
+-3 px band around the GT's depth edges (Canny 50/150): flying pixels and blurred edges raise it.</li>
<li><b>TAE</b>: temporal alignment error (Video Depth Anything): the depth of each frame warped into the next (and
back) with the GT poses, AbsRel against the depth there, after one disparity scale and shift for the whole clip;
on the frames decimated to at most 320 px wide.</li>
<li><b>flicker</b>: frame-to-frame jitter: on the pixels whose true depth changes by less than 1 % from one frame to
the next, the change of the depth beyond the true change, relative to the true depth (mean; 0 = steady), after
the same alignment for the whole clip as TAE; on the same decimated frames.</li>
<li><b>uncertainty AUSE</b> (m; runs with uncertainty_samples &gt; 1): area between the sparsification curve
of the published uncertainty (mean absolute error |pred - gt| of the pixels left after removing the most uncertain
0, 5, ..., 95 %) and the oracle's (removing by the error itself), mean per frame; pred is the metric depth as
published, or the RANSAC-aligned relative depth. 0 = ranks the errors perfectly; <b>random order</b>: the same for
a random ranking, for reference. <b>Spearman</b>: rank correlation of uncertainty and error.</li>
<li>Stage times are wall-clock milliseconds of the node's processing path per frame.</li></ul>"""

STYLE = ("body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em}table{border-collapse:collapse;"
         "margin:0.5em 0}td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
         "img{max-width:100%}.banner{background:#c0392b;color:white;padding:0.6em;font-weight:bold}")


def _page(title: str, parts: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes) -> str:
    return f'<p><img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></p>'


def _png(bgr: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError(f"cannot encode an image of shape {bgr.shape} as PNG")
    return encoded.tobytes()


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _summary_from_json(summary: dict) -> dict:
    """A summary as ``metrics.json`` holds it with the nulls of its metrics and temporal measures NaN again."""
    def numbers(values: dict) -> dict:
        return {key: numbers(value) if isinstance(value, dict) else math.nan if value is None else value
                for key, value in values.items()}
    return {**summary, "metrics": numbers(summary["metrics"]), "tae": summary["tae"] and numbers(summary["tae"])}


def _column(frames: list[dict], key: str) -> list[float]:
    """``key`` of each frame of a ``metrics.json``, NaN where missing or null (JSON's NaN)."""
    return [math.nan if frame.get(key) is None else frame[key] for frame in frames]


def _prefixed(protocol: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{protocol}.{key}": value for key, value in metrics.items()}


def _disparity_aligned(depth: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``align_disparity_lsq``, or all NaN (no prediction) for a constant prediction, which has no fit."""
    try:
        return align_disparity_lsq(depth, gt, mask)
    except ValueError:
        return np.full(depth.shape, np.nan, np.float32)


def _resize_to(depth: np.ndarray, K: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``depth`` (h, w) resized to ``shape`` (Hg, Wg) with nearest-neighbour, and ``K`` scaled to it."""
    if depth.shape == shape:
        return depth.astype(np.float32, copy=False), np.asarray(K, dtype=np.float64)
    resized = cv2.resize(depth.astype(np.float32), shape[::-1], interpolation=cv2.INTER_NEAREST)
    P = np.hstack([K, np.zeros((3, 1))])
    K_out, _ = scale_intrinsics(K, P, shape[1] / depth.shape[1], shape[0] / depth.shape[0])
    return resized, K_out
