"""The ground-plane accuracy figures of the README (Ground plane): :mod:`.ground`'s drivable-area IoU within
40 m and object range error within 50 m on held-out synthetic scenes, for the truth itself (things placed
from their masks, and from their boxes) and for each backend with its bundled weights::

    python -m panoptic_perception.evaluation.ground_figures --scenes 30 --size 1280x720 --threads 2
"""

from __future__ import annotations

from ..core.labels import CITYSCAPES
from ..core.types import PerceptionResult
from .ground import GroundMetrics, ground_truth_of


def truth_rows(samples) -> dict[str, dict]:
    """The ground-plane metrics of the truth itself on ``samples`` (each with a ``truth`` holding a
    :class:`GroundTruth`): ``ground truth (masks)`` (things at their masks' lowest pixels) and ``ground truth
    (boxes)`` (things at their boxes' bottom centres; the drivable area hidden behind whole boxes)."""
    masks, boxes = GroundMetrics(CITYSCAPES), GroundMetrics(CITYSCAPES)
    for sample in samples:
        truth = ground_truth_of(sample.truth)
        masks.add(sample.truth, truth)
        boxes.add(PerceptionResult(sample.truth.image_size, "ground truth", drivable_mask=sample.truth.drivable_mask,
                                   detections=sample.truth.detections), truth)
    return {"ground truth (masks)": masks.compute(), "ground truth (boxes)": boxes.compute()}


def backend_row(backend, samples) -> dict:
    """The ground-plane metrics of ``backend``'s outputs on ``samples``, scored as ``evaluate`` scores them."""
    from ..core.failures import FrameFailures
    from .evaluator import Evaluator
    from .loop import run_frames

    evaluator = Evaluator(backend.label_map, backend.capabilities)
    failures = FrameFailures(label=backend.name)
    run_frames(backend, samples, failures, evaluator, timed=False)
    if failures:
        raise RuntimeError(f"{backend.name}: {len(failures)} frames failed: {failures.to_list()[:3]}")
    return evaluator.compute().get("ground", {})


def markdown_table(rows: dict[str, dict]) -> str:
    """The rows (name → :meth:`GroundMetrics.compute` summary) as the README's Markdown table."""
    lines = ["| outputs | drivable IoU ≤ 40 m, mean (min) | range error ≤ 50 m, median (p90) | matched / true things |",
             "| --- | --- | --- | --- |"]
    for name, summary in rows.items():
        iou = (f"{summary['drivable_iou']:.3f} ({summary['drivable_iou_min']:.3f})" if "drivable_iou" in summary
               else "no drivable area")
        objects = ("no objects" if "true_objects" not in summary else
                   f"{100 * summary['range_error_median']:.2f} % ({100 * summary['range_error_p90']:.2f} %)")
        matched = ("–" if "true_objects" not in summary else
                   f"{summary['range_error_count']} / {summary['true_objects']}")
        lines.append(f"| {name} | {iou} | {objects} | {matched} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m panoptic_perception.evaluation.ground_figures``: the table of the README's Ground plane section."""
    import argparse
    import json

    import torch

    from ..backends.registry import list_backends
    from ..core.io import frame_size
    from ..data.sources import open_dataset
    from ..factory import create_backend

    parser = argparse.ArgumentParser(prog="python -m panoptic_perception.evaluation.ground_figures",
                                     description="ground-plane accuracy of the truth and of bundled backends on "
                                                 "held-out synthetic scenes")
    parser.add_argument("--scenes", type=int, default=30, help="held-out synthetic scenes (default 30)")
    parser.add_argument("--size", type=frame_size, default=(1280, 720), help="frame WxH (default 1280x720)")
    parser.add_argument("--backend", action="append", choices=list_backends(),
                        help="a backend with its bundled weights (repeatable; default: every one)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    samples = list(open_dataset(f"synthetic:{args.scenes}@{args.size[0]}x{args.size[1]}"))
    rows = truth_rows(samples)
    for name in args.backend or list_backends():
        rows[name] = backend_row(create_backend(name), samples)
    print(markdown_table(rows))
    if args.json:
        from .report import json_safe

        with open(args.json, "w") as file:
            json.dump(json_safe({"scenes": args.scenes, "size": list(args.size), "rows": rows}), file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
