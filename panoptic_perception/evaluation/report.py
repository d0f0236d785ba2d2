"""Evaluation reports a person reads at a glance: Markdown, plots, JSON and CSV.

:func:`write_report` takes one or more runs (a backend, or one backend with different weights, each
with its :class:`~panoptic_perception.evaluation.evaluator.Evaluator` summary and per-frame records)
and writes to the output folder:

- ``metrics.json`` (everything) and ``metrics.csv`` (one row per metric, one column per run; per-class
  values named ``<class name> (<id>)``, in the label map's order),
- ``frames_<run>.csv`` (per-frame results),
- ``pr_curve.png`` (precision-recall at IoU 0.5), ``per_class_iou.png`` (IoU bars per class),
  ``latency.png`` (latency histogram) where the runs have the data,
- ``report.md``: the data, a side-by-side table of the key metrics, the IoU per semantic class by name,
  the plots.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

#: (section, key, label, percent?) of the side-by-side table.
KEY_METRICS = (
    ("driving", "drivable_miou", "drivable mIoU", True),
    ("driving", "lane_iou", "lane IoU", True),
    ("driving", "lane_accuracy", "lane accuracy (pixel)", True),
    ("driving", "lane_recall", "lane recall (YOLOP accuracy)", True),
    ("driving", "global_drivable_miou", "drivable mIoU (dataset-wide)", True),
    ("driving", "global_lane_iou", "lane IoU (dataset-wide)", True),
    ("detection", "map50", "mAP50 (YOLOP)", True),
    ("detection", "recall", "recall (YOLOP)", True),
    ("detection", "AP", "AP 0.5:0.95 (COCO)", True),
    ("detection", "AP50", "AP50 (COCO)", True),
    ("semantic", "miou", "semantic mIoU", True),
    ("panoptic.all", "pq", "PQ", True),
    ("panoptic.things", "pq", "PQ things", True),
    ("panoptic.stuff", "pq", "PQ stuff", True),
    ("panoptic.all", "sq", "SQ", True),
    ("panoptic.all", "rq", "RQ", True),
    ("ground", "drivable_iou", "ground drivable IoU within 40 m, mean", True),
    ("ground", "drivable_iou_min", "ground drivable IoU within 40 m, min", True),
    ("ground", "range_error_median", "ground range error within 50 m, median", True),
    ("ground", "range_error_p90", "ground range error within 50 m, p90", True),
    ("ground", "object_recall", "ground object recall within 50 m", True),
    ("latency_ms", "median", "latency median (ms)", False),
    ("latency_ms", "p95", "latency p95 (ms)", False),
    ("", "throughput_fps", "throughput (frames/s)", False),
    ("", "drop_rate", "drop rate", True),
)


def json_safe(value):
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _flatten(summary: dict, prefix: str = "") -> dict[str, float]:
    """Scalar metrics as ``section.key`` → value (curves and per-class tables left out)."""
    flat = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _named_classes(run: dict) -> dict:
    """The run's summary with per-class tables keyed ``<class name> (<id>)`` (ids where no name is known)."""
    names = run.get("class_names", {})

    def rename(table: dict) -> dict:
        return {(f"{names[k]} ({k})" if k in names else k): v for k, v in table.items()}

    return {section: ({key: rename(v) if key.startswith("per_class") else v for key, v in values.items()}
                      if isinstance(values, dict) else values)
            for section, values in run["summary"].items()}


def metric_value(summary: dict, section: str, key: str):
    """``summary[section][key]``; a dotted ``section`` walks nested dicts; None where any level is missing."""
    for part in section.split(".") if section else ():
        summary = summary.get(part) or {}
    return summary.get(key)


def format_metric(value, percent: bool) -> str:
    """A metric for a table: percent with two decimals, or the value with two; "–" where missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.2f}" if percent else f"{value:.2f}"


def _plots(runs: list[dict], output: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curves = [(r["name"], r["summary"]["detection"]) for r in runs if "detection" in r["summary"]]
    if curves:
        figure, axis = plt.subplots(figsize=(6, 4.5))
        for name, detection in curves:
            recall, precision = np.asarray(detection["pr_recall"]), np.asarray(detection["pr_precision"])
            axis.plot(recall, precision, label=f"{name} (mAP50 {100 * detection['map50']:.1f})")
        axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall at IoU 0.5")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left")
        figure.tight_layout()
        figure.savefig(output / "pr_curve.png", dpi=110)
        plt.close(figure)
        written.append("pr_curve.png")

    bars = [(r["name"], _class_ious(r)) for r in runs]
    bars = [(name, ious) for name, ious in bars if ious]
    if bars:
        classes = list(dict.fromkeys(c for _, ious in bars for c in ious))
        figure, axis = plt.subplots(figsize=(max(6, 0.55 * len(classes) * len(bars) + 2), 4.5))
        width = 0.8 / len(bars)
        for i, (name, ious) in enumerate(bars):
            values = [100 * ious.get(c, math.nan) for c in classes]
            axis.bar(np.arange(len(classes)) + i * width, values, width, label=name)
        axis.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
        axis.set(ylabel="IoU (%)", ylim=(0, 100), title="IoU per class")
        axis.grid(axis="y", alpha=0.3)
        axis.legend()
        figure.tight_layout()
        figure.savefig(output / "per_class_iou.png", dpi=110)
        plt.close(figure)
        written.append("per_class_iou.png")

    latencies = [(r["name"], [f["latency_ms"] for f in r["frames"] if "latency_ms" in f]) for r in runs]
    latencies = [(name, values) for name, values in latencies if values]
    if latencies:
        figure, axis = plt.subplots(figsize=(6, 4))
        for name, values in latencies:
            axis.hist(values, bins=min(40, max(5, len(values) // 3)), alpha=0.6, label=f"{name} (median {np.median(values):.1f} ms)")
        axis.set(xlabel="latency per frame (ms)", ylabel="frames", title="Latency")
        axis.legend()
        figure.tight_layout()
        figure.savefig(output / "latency.png", dpi=110)
        plt.close(figure)
        written.append("latency.png")
    return written


def _class_ious(run: dict) -> dict[str, float]:
    """IoU per class name: the semantic classes, or background / drivable / lane for the driving masks."""
    summary = run["summary"]
    if "semantic" in summary:
        names = run.get("class_names", {})
        return {names.get(int(k), str(k)): v for k, v in summary["semantic"]["per_class_iou"].items()
                if v is not None and not math.isnan(v)}
    if "driving" in summary:
        driving = summary["driving"]
        return {"drivable area": driving["global_drivable_iou"], "not drivable": driving["global_drivable_background_iou"],
                "lane lines": driving["global_lane_iou"]}
    return {}


def write_report(runs: list[dict], output: str | Path, data: str) -> Path:
    """Write the report of ``runs`` ({name, summary, frames, backend, class_names, failed}) into ``output``.

    ``failed``: the run's skipped frames (:meth:`~panoptic_perception.core.failures.FrameFailures.to_list`)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(json_safe({"data": data, "runs": runs}), indent=2))
    flats = [_flatten(_named_classes(r)) for r in runs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))  # the summaries' order: classes by label map
    with open(output / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *(r["name"] for r in runs)])
        for key in keys:
            writer.writerow([key, *("" if key not in flat else f"{flat[key]:.6g}" for flat in flats)])
    for run in runs:
        columns = list(dict.fromkeys(k for frame in run["frames"] for k in frame))
        with open(output / f"frames_{run['name']}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(run["frames"])
    plots = _plots(runs, output)

    lines = [f"# Evaluation on {data}", ""]
    for run in runs:
        backend = run.get("backend", {})
        weights = backend.get("weights", {})
        thresholds = ", ".join(f"{name} {value:g}" for name, value in backend.get("thresholds", {}).items())
        lines.append(f"- **{run['name']}**: backend `{backend.get('backend', '?')}`, weights {weights.get('source', '?')} "
                     f"`{weights.get('path') or ''}`, input {'x'.join(map(str, backend.get('input_size', [])))}, "
                     f"{run['summary']['frames']} frames" + (f", {len(run['failed'])} failed" if run.get("failed") else "")
                     + (f", thresholds: {thresholds}" if thresholds else ""))
    lines += ["", "| metric | " + " | ".join(r["name"] for r in runs) + " |", "| --- |" + " --- |" * len(runs)]
    for section, key, label, percent in KEY_METRICS:
        values = [metric_value(r["summary"], section, key) for r in runs]
        if any(v is not None for v in values):
            lines.append(f"| {label}{' (%)' if percent else ''} | " + " | ".join(format_metric(v, percent) for v in values) + " |")
    semantic = [(r["name"], _class_ious(r)) for r in runs if "semantic" in r["summary"]]
    if semantic:
        classes = list(dict.fromkeys(c for _, ious in semantic for c in ious))
        lines += ["", "| semantic IoU per class (%) | " + " | ".join(name for name, _ in semantic) + " |",
                  "| --- |" + " --- |" * len(semantic)]
        lines += [f"| {c} | " + " | ".join(format_metric(ious.get(c), True) for _, ious in semantic) + " |" for c in classes]
    lines += ["", "Official TwinLiteNet/YOLOP form: a confusion matrix per frame, averaged over frames; "
              "dataset-wide: one confusion matrix over all frames. Detection: see `metrics.json` for all COCO numbers.", ""]
    lines += [f"![{plot}]({plot})" for plot in plots]
    failed = [(r["name"], f) for r in runs for f in r.get("failed", [])]
    if failed:  # all of them are in metrics.json
        lines += ["", "## Failed frames (skipped)", ""] + [f"- {run}: {f['frame']} ({f['stage']}): {f['error']}"
                                                            for run, f in failed[:50]]
        if len(failed) > 50:
            lines.append(f"- ... {len(failed) - 50} more in metrics.json")
    (output / "report.md").write_text("\n".join(lines) + "\n")
    return output / "report.md"
