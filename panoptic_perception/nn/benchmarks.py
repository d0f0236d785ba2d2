"""Timings of the hand-written operators under the backends' networks, beside the whole-backend latency
that ``panoptic-perception benchmark`` reports (which also times the whole Mask R-CNN of fusion_panoptic):

- ``deform_conv``: CycleNet's modulated deformable convolution (ADC-sized: 256 -> 256 channels, 3x3, on
  a 128x256 map, 1/4 of a 512x1024 crop), against a plain convolution of the same shape;
- ``roi_align``: Mask R-CNN's RoIAlign at the box head's size (1000 RoIs -> 7x7) and the mask head's
  (100 RoIs -> 28x28), 256 channels, sampling ratio 2.

    python -m panoptic_perception.nn.benchmarks [--runs 5] [--threads N]

prints one JSON object: the median milliseconds of each timing after one warm-up call, on random inputs
(fixed seed) with torch's thread count.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .deform_conv import ModulatedDeformConv2d
from .roi_align import roi_align


def median_ms(call: Callable[[], object], runs: int) -> float:
    """Median wall time of ``call()`` in milliseconds over ``runs`` calls, after one untimed warm-up."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def deform_conv_ms(channels: int = 256, size: tuple[int, int] = (128, 256), runs: int = 5) -> dict[str, float]:
    """``deform_conv_ms`` of a 3x3 :class:`ModulatedDeformConv2d` ``channels`` -> ``channels`` on a
    (height, width) = ``size`` map with random offsets and modulation, and ``conv2d_ms`` of the plain
    convolution with the same weights."""
    generator = torch.Generator().manual_seed(8)
    layer = ModulatedDeformConv2d(channels, channels, 3, padding=1)
    x = torch.randn(1, channels, *size, generator=generator)
    offset = torch.randn(1, 18, *size, generator=generator)
    mask = torch.rand(1, 9, *size, generator=generator)
    with torch.inference_mode():
        return {
            "deform_conv_ms": median_ms(lambda: layer(x, offset, mask), runs),
            "conv2d_ms": median_ms(lambda: F.conv2d(x, layer.weight, layer.bias, padding=1), runs),
        }


def roi_align_ms(
    pools: Sequence[tuple[int, int]] = ((1000, 7), (100, 28)), features: tuple[int, int] = (200, 336), runs: int = 5,
) -> dict[str, float]:
    """``roi_align_<count>x<size>_ms`` for each (RoI count, output size) of ``pools``: random boxes of 2 to
    62 pixels on a 256-channel feature map of (height, width) = ``features``, scale 1, sampling ratio 2."""
    generator = torch.Generator().manual_seed(0)
    feature_map = torch.randn(1, 256, *features, generator=generator)
    results = {}
    for count, size in pools:
        corner = torch.rand(count, 2, generator=generator) * torch.tensor([features[1] - 64.0, features[0] - 64.0])
        extent = torch.rand(count, 2, generator=generator) * 60 + 2
        rois = torch.cat((torch.zeros(count, 1), corner, corner + extent), dim=1)
        results[f"roi_align_{count}x{size}_ms"] = median_ms(lambda: roi_align(feature_map, rois, size, 1.0, 2), runs)
    return results


def run(runs: int = 5) -> dict[str, float]:
    """Every timing of this module, by name."""
    return {**deform_conv_ms(runs=runs), **roi_align_ms(runs=runs)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m panoptic_perception.nn.benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed calls per operator (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"threads": torch.get_num_threads(), **run(args.runs)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
