"""Post-processing shared by all backends: network-resolution maps → masks at the input resolution.

Maps are cropped of letterbox padding and bilinearly interpolated to the input image size *before*
the decision (argmax or threshold), so mask edges are as sharp as the input allows.

**The reference computation** is ``F.interpolate(maps, size, mode="bilinear", align_corners=False)`` of
the contiguous maps, then the decision (the first maximum over channels, or ``value > threshold``). At
camera resolution it writes every channel of every pixel (19 x 1920 x 1080 floats for Cityscapes) and
costs several times the network. What is computed instead gives the same result at every pixel:

- **Uniform cells.** A pixel's interpolated value is a convex combination of the 2x2 network-resolution
  values around it (its *cell*). Where all four corners decide alike (the same first maximum, or all
  above / all below the threshold) with a margin larger than float32 rounding can close (``2^-16``
  of the map's largest magnitude; the kernel's rounding error is below ``2^-21`` of it), every
  pixel of the cell decides alike, exactly: each rounding step of the interpolation is monotonic in the
  values. Those pixels copy the corner's decision.
- **Boundary cells** (the rest: class and mask edges, a few percent of the cells) are interpolated,
  but only for the classes that can win there: a class whose largest corner value is below the
  largest smallest-corner value of any class (less the margin) cannot. A pixel whose two best
  values lie within the margin is computed again with the kernel's exact arithmetic (below).
- **The kernel's arithmetic**: that of torch 2.13's generic CPU kernel, the one ``F.interpolate`` runs on
  contiguous float32 maps (except 3-channel maps on one thread and outputs with H + W <= 128, which go
  to its channels-last kernel), on an x86-64 CPU with fused multiply-add: weights from the source
  coordinate ``scale * (i + 0.5) - 0.5`` with one rounding, then ``fma(v0, w0, v1 * w1)`` along the
  width and then along the height. It is emulated in float64; rounding twice (float64, then float32)
  can differ from one fused rounding in about one case in 2^29, so a pixel whose two best classes are
  *equal to the last bit* in the reference may, that rarely, take the other class: a tie.

**Routes.** Where the per-cell work would cost more than interpolating everything (an untrained
network's noise, whose cells are nearly all boundaries with most classes contending; masks, whose one
channel interpolates in about a nanosecond a pixel, at up to about 1280x720), and for maps the margin
argument does not cover (NaN, infinities, magnitudes beyond 2^64, dtypes other than float32), the reference
computation itself runs. Which route is cheaper comes from costs measured on this CPU (``_ARGMAX_*_NS``,
``_MASK_*_NS``); both give the same result.

**Ties.** The channels-last kernel (which the maps of cyclenet's and fusion_panoptic's fast networks went
through before, being channels-last) rounds differently from the generic one: pixels whose two best
classes lie within a float32 rounding of each other may come out differently from what those two
backends gave before. On the golden frames recorded before this change (4 frames x 4 sizes per backend):
1 pixel of 925,043 (cyclenet, 1283x721) and 1 of 2,073,600 (fusion_panoptic, 1920x1080), both road
against sidewalk with equal interpolated logits to 5 digits; every other output equal. A review comparing
675 outputs (5 backends, 17 frames, several sizes) found 2 more such pixels, both cyclenet's, whose two
classes were equal to the last bit in the channels-last values. The emulated arithmetic is torch 2.13's (the
version ``constraints.txt`` pins); with another torch the kernel may round otherwise, and ties may differ.

Logits in channels-last memory format (what the fast networks return) need no copy: only their
network-resolution values are read. On a GPU the reference computation itself runs (it is fast there).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .labels import LabelMap
from .preprocess import Geometry

#: Corner margins below this fraction of the map's largest magnitude are treated as possible ties.
_MARGIN = 2.0**-16
#: Which route is cheaper, from costs measured on this project's CPU (2 threads, torch 2.13) in nanoseconds;
#: both routes give the same result. The reference computation: per pixel and channel (class maps: 19
#: channels at 1280x720 take 45-60 ms), per pixel (masks: 0.9 ms at 1280x720, 2 ms at 1920x1080, 7.8 ms at
#: 3840x2160). The per-cell one: per boundary cell, per boundary pixel and contending class, and for a mask
#: a fixed part, per network-resolution pixel, per boundary cell and per boundary pixel (fitted to 51
#: measured masks; where the two are within about 0.5 ms of each other, as at 1920x1080, the choice may go
#: either way). Real frames' class maps have 4-25 % boundary pixels with 2-3 classes
#: contending (5-15x cheaper per cell at every size); an untrained network's noise has nearly every pixel on
#: a boundary with 16 of 19 classes contending (1.5-5x dearer per cell). Masks' reference is cheap enough
#: that per cell pays only above 1920x1080-ish.
_ARGMAX_DENSE_NS, _ARGMAX_CELL_NS, _ARGMAX_CONTENDER_NS = 3.0, 1000.0, 4.0
_MASK_DENSE_NS, _MASK_FIXED_NS, _MASK_LOW_NS, _MASK_CELL_NS, _MASK_PIXEL_NS = 1.0, 1e6, 2.0, 100.0, 8.0


@dataclass(frozen=True)
class _Axis:
    """Bilinear sampling along one axis (``align_corners=False``) as torch's CPU kernel computes it.

    Output index ``o`` reads input ``index0[o]`` with ``weight0[o]`` and ``index1[o]`` with
    ``weight1[o]`` (float32). Input index ``i`` is the first corner of the outputs ``start[i]`` to
    ``stop[i] - 1`` (none where equal), whose second corner is ``next[i]``.
    """

    index0: torch.Tensor
    weight0: torch.Tensor
    weight1: torch.Tensor
    start: torch.Tensor
    stop: torch.Tensor
    next: torch.Tensor

    @property
    def block(self) -> int:
        """The most outputs one input index is the first corner of."""
        return int((self.stop - self.start).max())


@functools.lru_cache(maxsize=32)
def _axis(n_in: int, n_out: int) -> _Axis:
    scale = torch.tensor(float(n_in), dtype=torch.float32) / n_out
    # scale * (o + 0.5) - 0.5 rounded once, as the kernel's fused multiply-add does (float64 holds it exactly)
    source = (scale.double() * (torch.arange(n_out, dtype=torch.float64) + 0.5) - 0.5).float().clamp(min=0)
    index0 = source.floor().long().clamp(max=n_in - 1)
    weight1 = (source - index0.float()).clamp(0, 1)
    inputs = torch.arange(n_in)
    start = torch.searchsorted(index0, inputs)
    stop = torch.searchsorted(index0, inputs, right=True)
    return _Axis(index0, 1 - weight1, weight1, start, stop, (inputs + 1).clamp(max=n_in - 1))


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` of float32 tensors with (nearly always) one rounding, as a fused multiply-add."""
    return (a.double() * b.double() + c.double()).float()


class _Upsampling:
    """Bilinear upsampling of (C, h, w) maps to (H, W), evaluated at chosen pixels only."""

    def __init__(self, maps: torch.Tensor, size: tuple[int, int]) -> None:
        self.maps = maps
        self.size = size
        self.rows, self.columns = _axis(maps.shape[-2], size[0]), _axis(maps.shape[-1], size[1])

    def spread(self, cell_values: torch.Tensor) -> np.ndarray:
        """(h, w) per-cell values → (H, W) numpy: each pixel takes its cell's value (numpy's repeat copies
        rows 4-6x faster than torch's index_select at 1920x1080)."""
        rows, columns = (axis.stop - axis.start for axis in (self.rows, self.columns))
        return np.repeat(np.repeat(cell_values.numpy(), columns.numpy(), axis=1), rows.numpy(), axis=0)

    def boundary(self, corner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows and columns of the cells that hold pixels and whose (h, w) ``corner`` decisions are not all
        equal (a negative decision is never equal: an undecided corner)."""
        # A cell's second corners are the next row and column (the last ones its own): compare shifted slices.
        uniform = corner >= 0
        uniform[:-1] &= corner[:-1] == corner[1:]
        uniform[:, :-1] &= corner[:, :-1] == corner[:, 1:]
        uniform[:-1, :-1] &= corner[:-1, :-1] == corner[1:, 1:]
        empty = (self.rows.stop == self.rows.start)[:, None] | (self.columns.stop == self.columns.start)[None, :]
        return torch.nonzero(~(uniform | empty), as_tuple=True)

    def cell_pixels(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """(n,) how many output pixels each cell ``(rows[k], columns[k])`` holds."""
        heights, widths = (axis.stop - axis.start for axis in (self.rows, self.columns))
        return heights[rows] * widths[columns]

    def corners(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """The (4, n, C) values at the corners of cells ``(rows[k], columns[k])``: top-left, top-right,
        bottom-left, bottom-right."""
        channels, _, width = self.maps.shape
        below, right = self.rows.next[rows], self.columns.next[columns]
        flat = torch.cat([rows * width + columns, rows * width + right, below * width + columns, below * width + right])
        if self.maps.stride(0) == 1:  # channels last: each pixel's channels lie together
            values = self.maps.permute(1, 2, 0).reshape(-1, channels).index_select(0, flat)  # (4n, C)
        else:
            values = self.maps.reshape(channels, -1).index_select(1, flat).T
        return values.reshape(4, len(rows), channels)

    def blocks(self, rows: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output rows (n, bh) and columns (n, bw) of the pixels of cells ``(rows[k], columns[k])``;
        blocks smaller than (bh, bw) repeat their last row / column."""
        def span(axis: _Axis, cells: torch.Tensor) -> torch.Tensor:
            return torch.minimum(axis.start[cells, None] + torch.arange(axis.block), axis.stop[cells, None] - 1)

        return span(self.rows, rows), span(self.columns, columns)

    def interpolate(self, corners: torch.Tensor, y: torch.Tensor, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """Interpolated values from ``corners`` (4, ...) at output rows ``y`` and columns ``x`` (broadcast
        against the corners' other axes). ``exact``: the kernel's own arithmetic; otherwise plain float32,
        within ``2^-21`` of the largest corner magnitude of it."""
        wx0, wx1 = self.columns.weight0[x], self.columns.weight1[x]
        wy0, wy1 = self.rows.weight0[y], self.rows.weight1[y]
        c = corners.unbind(0)
        if exact:
            top, bottom = _fma(c[0], wx0, c[1] * wx1), _fma(c[2], wx0, c[3] * wx1)
            return _fma(top, wy0, bottom * wy1)
        top, bottom = c[0] * wx0 + c[1] * wx1, c[2] * wx0 + c[3] * wx1
        return top + (bottom - top) * wy1  # two operations at the output's size, not three

    def write(self, out: np.ndarray, y: torch.Tensor, x: torch.Tensor, values: torch.Tensor) -> None:
        """``out[y, x] = values`` for broadcastable pixel coordinates."""
        flat = y * self.size[1] + x  # (torch's scatter into the shared memory: about twice numpy's speed)
        torch.from_numpy(out).view(-1).scatter_(0, flat.reshape(-1), values.expand(flat.shape).reshape(-1))


def _interpolated(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The reference computation's interpolation: (C, h, w) maps → (C, H, W)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.contiguous()[None], size=size, mode="bilinear", align_corners=False)[0]


def _margin(maps: torch.Tensor, size: tuple[int, int]) -> float | None:
    """The margin for float32 ties (module docstring), or None where the per-cell computation does not
    apply: on a GPU (the reference computation is fast there), at the same size, for other dtypes than
    float32 (the reference interpolates in theirs), and for maps with NaN, infinities or magnitudes
    beyond 2^64 (where float32 sums could overflow). The absolute part covers subnormal values, whose
    rounding error is absolute (at most 2^-150 a step)."""
    if maps.device.type != "cpu" or tuple(maps.shape[-2:]) == tuple(size) or maps.dtype != torch.float32:
        return None
    low, high = torch.aminmax(maps)
    magnitude = max(-float(low), float(high))
    return _MARGIN * magnitude + 2.0**-140 if magnitude < 2.0**64 else None  # False for NaN too


def upsampled_argmax(maps: torch.Tensor, size: tuple[int, int], values: torch.Tensor | None = None) -> np.ndarray:
    """The first maximum over channels of (C, h, w) maps bilinearly interpolated to ``size`` (H, W).

    Equal to ``F.interpolate(maps[None], size, mode="bilinear", align_corners=False)[0].max(0).indices``
    (see the module docstring for how, and for its one kind of tie). ``maps``: float32, any memory
    format, C <= 256. ``values``: (C,) uint8 written for each channel (default: the channel index).
    Returns an (H, W) uint8 numpy array. Raises ValueError for more than 256 channels.
    """
    channels = maps.shape[0]
    if channels > 256:
        raise ValueError(f"at most 256 channels fit a uint8 map, got {channels}")
    values = torch.arange(channels, dtype=torch.uint8) if values is None else values
    margin = _margin(maps, size)
    if margin is None or channels == 1:
        return values.to(maps.device)[_interpolated(maps, size).max(0).indices].cpu().numpy()
    # The classes within the margin of each pixel's best (max(0) with its indices costs 4-8x more). -1 marks
    # a corner where another class comes that close: its cells are interpolated, and only where one class
    # is near is the sum of the near classes' indices that class.
    near = maps >= maps.amax(0) - margin
    index = (near * torch.arange(channels, dtype=torch.uint8)[:, None, None]).sum(0, dtype=torch.uint8).long()
    corner = torch.where(near.sum(0, dtype=torch.uint8) == 1, index, -1)
    upsampling = _Upsampling(maps, size)
    rows, columns = upsampling.boundary(corner)
    corners = upsampling.corners(rows, columns)  # (4, n, C)
    # A class can win at a pixel of the cell only if its largest corner reaches the best guaranteed value.
    c = corners.unbind(0)
    floor = torch.minimum(torch.minimum(c[0], c[1]), torch.minimum(c[2], c[3])).max(1, keepdim=True).values
    reach = torch.maximum(torch.maximum(c[0], c[1]), torch.maximum(c[2], c[3]))
    contender = reach >= floor - margin
    contenders = contender.sum(1)
    per_cell = len(rows) * _ARGMAX_CELL_NS + int((upsampling.cell_pixels(rows, columns) * contenders).sum()) * _ARGMAX_CONTENDER_NS
    if per_cell > size[0] * size[1] * channels * _ARGMAX_DENSE_NS:
        return values[_interpolated(maps, size).max(0).indices].numpy()
    out = upsampling.spread(values[corner.clamp(min=0)])  # boundary cells are overwritten below
    for count in contenders.unique().tolist():
        cells = torch.nonzero(contenders == count)[:, 0]
        classes = torch.nonzero(contender[cells])[:, 1].view(-1, count)  # (n, K): every possible winner, ascending
        chosen = corners[:, cells].gather(2, classes[None].expand(4, -1, -1))  # (4, n, K)
        _argmax_in_cells(upsampling, out, chosen, classes, rows[cells], columns[cells], values, margin)
    return out


def _argmax_in_cells(upsampling: _Upsampling, out: np.ndarray, corners: torch.Tensor, classes: torch.Tensor,
                     rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, margin: float) -> None:
    """Writes the first maximum over ``classes`` (n, K) of the pixels of n cells, from the K classes'
    ``corners`` (4, n, K)."""
    y, x = upsampling.blocks(rows, columns)  # (n, bh), (n, bw)
    y, x = y[:, :, None], x[:, None, :]
    if classes.shape[1] == 1:
        upsampling.write(out, y, x, values[classes[:, 0]][:, None, None])
        return
    if classes.shape[1] == 2:  # the most common case: the sign of one interpolated difference decides
        difference = upsampling.interpolate((corners[..., 1] - corners[..., 0])[..., None, None], y, x)  # (n, bh, bw)
        pair = values[classes]
        upsampling.write(out, y, x, torch.where(difference > 0, pair[:, 1, None, None], pair[:, 0, None, None]))
        close = torch.nonzero(difference.abs() <= margin, as_tuple=True)
        if len(close[0]):
            _exact_argmax(upsampling, out, corners, classes, values, y, x, close)
        return
    scores = upsampling.interpolate(corners[..., None, None], y[:, None], x[:, None])  # (n, K, bh, bw)
    near = scores >= scores.amax(1, keepdim=True) - margin  # as for the corners: max(1) with indices is slower
    # Where one class is near the best, the sum of the near classes' values is its value (the others are
    # computed again below); no gather of indices.
    upsampling.write(out, y, x, (near * values[classes][:, :, None, None]).sum(1, dtype=torch.uint8))
    close = torch.nonzero(near.sum(1, dtype=torch.uint8) > 1, as_tuple=True)
    if len(close[0]):
        _exact_argmax(upsampling, out, corners, classes, values, y, x, close)


def _exact_argmax(upsampling: _Upsampling, out: np.ndarray, corners: torch.Tensor, classes: torch.Tensor,
                  values: torch.Tensor, y: torch.Tensor, x: torch.Tensor, close: tuple[torch.Tensor, ...]) -> None:
    """Near-ties: the pixels ``close`` (cell, row, column indices into the blocks ``y``, ``x``) in the kernel's
    own arithmetic, ties to the lowest class."""
    cell, i, j = close
    py, px = y[cell, i, 0], x[cell, 0, j]
    exact = upsampling.interpolate(corners[:, cell], py[:, None], px[:, None], exact=True)  # (m, K)
    lowest = torch.where(exact == exact.max(1, keepdim=True).values, classes[cell], classes.new_tensor(1 << 16))
    upsampling.write(out, py, px, values[lowest.min(1).values])


def upsampled_threshold(maps: torch.Tensor, size: tuple[int, int], threshold: float) -> np.ndarray:
    """``value > threshold`` of a (1, h, w) map bilinearly interpolated to ``size`` (H, W), as an (H, W)
    bool numpy array; equal to ``F.interpolate(maps[None], size, mode="bilinear", align_corners=False)[0, 0] >
    threshold`` (see the module docstring). ``threshold`` may be infinite."""
    margin = _margin(maps, size)
    dense = size[0] * size[1] * _MASK_DENSE_NS
    if margin is None or dense < _MASK_FIXED_NS:
        return (_interpolated(maps, size)[0] > threshold).cpu().numpy()
    value = maps[0]
    above = value > threshold
    corner = torch.where((value - threshold).abs() > margin, above.to(torch.int8), -1)
    upsampling = _Upsampling(maps, size)
    rows, columns = upsampling.boundary(corner)
    pixels = int(upsampling.cell_pixels(rows, columns).sum())
    if _MASK_FIXED_NS + value.numel() * _MASK_LOW_NS + len(rows) * _MASK_CELL_NS + pixels * _MASK_PIXEL_NS > dense:
        return (_interpolated(maps, size)[0] > threshold).numpy()
    out = upsampling.spread(above)
    if len(rows) == 0:
        return out
    corners = upsampling.corners(rows, columns)[..., 0]  # (4, n)
    y, x = upsampling.blocks(rows, columns)
    y, x = y[:, :, None], x[:, None, :]
    interpolated = upsampling.interpolate(corners[..., None, None], y, x)  # (n, bh, bw)
    upsampling.write(out, y, x, interpolated > threshold)
    close = torch.nonzero((interpolated - threshold).abs() <= margin, as_tuple=True)
    if len(close[0]):
        cell, i, j = close
        py, px = y[cell, i, 0], x[cell, 0, j]
        upsampling.write(out, py, px, upsampling.interpolate(corners[:, cell], py, px, exact=True) > threshold)
    return out


def _source_size(geometry: Geometry) -> tuple[int, int]:
    width, height = geometry.source_size
    return height, width


def binary_masks(logits: torch.Tensor, geometries: Sequence[Geometry], threshold: float = 0.5) -> list[np.ndarray]:
    """(N, 2, h, w) background/positive logits → per image an (H, W) uint8 0/1 mask.

    A pixel is set where the softmax probability of the positive class exceeds ``threshold``; 0.5 is
    the argmax of the official code (a tie goes to background, as with argmax). With two classes
    ``p > t`` is ``positive - background > log(t / (1 - t))``, and interpolation is linear, so only
    the difference channel is interpolated: one channel instead of two.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"mask threshold must be in [0, 1], got {threshold}")
    if threshold <= 0.0:
        logit_threshold = -math.inf
    elif threshold >= 1.0:
        logit_threshold = math.inf
    else:
        logit_threshold = math.log(threshold / (1 - threshold))
    difference = logits[:, 1:2] - logits[:, 0:1]
    return [_mask(d, g, logit_threshold) for d, g in zip(difference, geometries)]


def probability_masks(probabilities: torch.Tensor, geometries: Sequence[Geometry], threshold: float = 0.5) -> list[np.ndarray]:
    """(N, 1, h, w) probabilities → per image an (H, W) uint8 0/1 mask of ``p > threshold`` (interpolated first)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"mask threshold must be in [0, 1], got {threshold}")
    return [_mask(p, g, threshold) for p, g in zip(probabilities, geometries)]


def _mask(maps: torch.Tensor, geometry: Geometry, threshold: float) -> np.ndarray:
    return upsampled_threshold(geometry.crop_content(maps), _source_size(geometry), threshold).view(np.uint8)


def class_maps(logits: torch.Tensor, geometries: Sequence[Geometry], label_map: LabelMap) -> list[np.ndarray]:
    """(N, C, h, w) class logits (channel i: ``label_map.classes[i]``) → per image an (H, W) uint8 map of
    class ids at the input resolution (interpolated before the argmax; :func:`upsampled_argmax`)."""
    if logits.shape[1] != len(label_map):
        raise ValueError(f"{logits.shape[1]} logit channels for a label map of {len(label_map)} classes")
    ids = torch.as_tensor(label_map.ids, dtype=torch.uint8)
    return [upsampled_argmax(g.crop_content(l), _source_size(g), ids) for l, g in zip(logits, geometries)]
