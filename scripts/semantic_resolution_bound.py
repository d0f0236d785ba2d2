"""Upper bound of semantic mIoU that a network input size and output stride allow on synthetic scenes.

A segmentation network that sees a frame at ``W x H`` and predicts at ``1/stride`` of it cannot draw a
boundary finer than its output grid.  This script scores the best such output: the scene is rendered at
the network input size (what the network sees), its exact labels are averaged into class fractions per
``stride x stride`` cell (a perfect network's softmax), those are bilinearly upsampled to the evaluation
size and arg-maxed, and the result is scored against the exact labels at the evaluation size, the way
``evaluate`` and training validation score a backend (mIoU over the classes the scenes contain).

Usage: ``python scripts/semantic_resolution_bound.py [--scenes 100] [--first-seed 1000000]
[--size 256x144:4 ...]``; prints one line per size with mIoU and per-class IoU.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.evaluation.semantic import SemanticSegmentationMetrics


def bound(width: int, height: int, stride: int, seeds: range, eval_size: tuple[int, int]) -> dict:
    metrics = SemanticSegmentationMetrics(CITYSCAPES.ids.tolist())
    for seed in seeds:
        truth = generate_scene(seed, *eval_size).semantic
        seen = generate_scene(seed, width, height).semantic
        classes = np.unique(seen)
        one_hot = torch.from_numpy(seen[None] == classes[:, None, None]).float()[None]
        fractions = F.avg_pool2d(one_hot, stride) if stride > 1 else one_hot
        scores = F.interpolate(fractions, size=eval_size[::-1], mode="bilinear", align_corners=False)
        metrics.add(classes[scores[0].argmax(0).numpy()], truth)
    return metrics.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=1_000_000)
    parser.add_argument("--eval-size", default="640x360")
    parser.add_argument("--size", action="append", help="WxH:stride (repeatable)")
    args = parser.parse_args()
    eval_size = tuple(int(v) for v in args.eval_size.split("x"))
    seeds = range(args.first_seed, args.first_seed + args.scenes)
    for spec in args.size or ["256x144:4", "320x176:4", "512x288:4", "640x360:4"]:
        size, stride = spec.split(":")
        width, height = (int(v) for v in size.split("x"))
        metrics = bound(width, height, int(stride), seeds, eval_size)
        per_class = ", ".join(f"{CITYSCAPES[c].name} {iou:.2f}" for c, iou in metrics["per_class_iou"].items() if iou == iou)
        print(f"{width}x{height} stride {stride}: mIoU {metrics['miou']:.3f} ({per_class})")


if __name__ == "__main__":
    main()
