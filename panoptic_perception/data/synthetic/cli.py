"""The command line of the synthetic scenes: ``python -m panoptic_perception.data.synthetic --benchmark``
prints the generation speed on one CPU core; ``--save DIR --count N`` writes images and colour-coded labels
to look at."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from ...core.labels import CITYSCAPES
from ...core.visualize import colorize_panoptic, colorize_semantic, draw_overlay
from .scene import SyntheticScenes, generate_scene
from .types import SyntheticScene


def save_scene(scene: SyntheticScene, directory: str | Path) -> list[Path]:
    """Write image, semantic / panoptic colour maps, the driving overlay and a 2x2 panel (last) as PNGs
    ``synthetic_<seed>_<part>.png`` into ``directory`` (created if missing); returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"synthetic_{scene.seed:05d}"
    parts = {
        "image": scene.image,
        "semantic": colorize_semantic(scene.semantic, CITYSCAPES),
        "panoptic": colorize_panoptic(scene.panoptic, CITYSCAPES),
        "driving": draw_overlay(scene.image, replace(scene.to_result(), semantic=None), CITYSCAPES, alpha=0.45),
    }
    paths = []
    for name, arr in parts.items():
        path = directory / f"{stem}_{name}.png"
        cv2.imwrite(str(path), arr)
        paths.append(path)
    panel = np.concatenate((np.concatenate((parts["image"], parts["driving"]), 1), np.concatenate((parts["semantic"], parts["panoptic"]), 1)), 0)
    path = directory / f"{stem}_panel.png"
    cv2.imwrite(str(path), panel)
    paths.append(path)
    return paths


def benchmark(width: int = 640, height: int = 360, frames: int = 200, first_seed: int = 0) -> float:
    """Frames per second of :func:`~.scene.generate_scene` on one core (images and labels)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for s in range(3):
            generate_scene(first_seed + s, width, height)
        start = time.perf_counter()
        for s in range(frames):
            generate_scene(first_seed + s, width, height)
        return frames / (time.perf_counter() - start)
    finally:
        cv2.setNumThreads(threads)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m panoptic_perception.data.synthetic",
                                     description="Seeded synthetic dash-camera driving frames with exact, pixel-consistent labels.")
    parser.add_argument("--benchmark", action="store_true", help="print frames/s on one CPU core")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--frames", type=int, default=200, help="frames to time with --benchmark")
    parser.add_argument("--save", metavar="DIR", help="write images and colour-coded labels to DIR")
    parser.add_argument("--count", type=int, default=6, help="scenes to write with --save")
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.benchmark and not args.save:
        parser.error("nothing to do: give --benchmark and/or --save DIR")
    if args.save:
        for scene in SyntheticScenes(args.count, args.width, args.height, first_seed=args.first_seed):
            paths = save_scene(scene, args.save)
            print(f"seed {scene.seed}: {paths[-1]}  ({len(scene.detections)} objects, {scene.attributes})")
    if args.benchmark:
        fps = benchmark(args.width, args.height, args.frames, args.first_seed)
        print(f"synthetic scenes {args.width}x{args.height}: {fps:.1f} frames/s on one core ({1000.0 / fps:.2f} ms/frame, {args.frames} frames)")
    return 0


def pin_to_one_core() -> None:
    """Run this process on a single CPU (the benchmark's "one core"), where the OS allows it."""
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        except OSError:
            pass
