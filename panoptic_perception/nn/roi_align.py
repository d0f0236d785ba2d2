"""RoIAlign and the multi-scale FPN RoI pooler of Mask R-CNN, in plain torch.

RoIAlign (He et al., *Mask R-CNN*, 2017, Sec. 3) pools a fixed ``oh x ow`` grid of features from every
region of interest without quantising coordinates: each output bin averages a regular grid of samples,
each sample bilinearly interpolated from the four nearest feature pixels. :func:`roi_align` reproduces
the CPU kernel of torchvision (``torchvision/csrc/ops/cpu/roi_align_kernel.cpp`` with
``roi_align_common.h``, itself Detectron's Caffe2 kernel) rule for rule:

* box corners are multiplied by ``spatial_scale``; ``aligned=True`` then subtracts half a pixel (pixel
  centres at integer + 0.5, Detectron2's "ROIAlignV2"), while ``aligned=False`` (the Mask R-CNN paper and
  Detectron) keeps them and forces the RoI's width and height to at least 1;
* a bin is ``roi_size / output_size``; it holds ``sampling_ratio x sampling_ratio`` samples, or, when
  ``sampling_ratio <= 0``, ``ceil(roi_height / oh) x ceil(roi_width / ow)`` samples (adaptive: different
  for every RoI), placed at the centres of a regular subdivision of the bin; the bin's value is their mean
  (a bin without samples, as an inverted ``aligned=True`` box gives in the adaptive mode, is 0);
* a sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` (or a NaN coordinate) contributes 0 but
  still counts in the mean; otherwise coordinates ``<= 0`` are clamped to 0 and a sample at or beyond the
  last row/column (``y >= H - 1``) snaps onto it, so the border pixels extend by up to one pixel.

How it is vectorised: the bilinear rule, border rules included, is separable (a sample's weight on a
pixel is its row weight times its column weight, each zero when that coordinate is out of range), and a
bin is a regular ``gh x gw`` grid of samples. So for RoIs that share a grid the taps are computed per
axis and broadcast into all ``(RoI, bin, sample, 2 x 2)`` pixel reads with weights ``row weight x column
weight / (gh * gw)``, ordered bin by bin, and ``torch.nn.functional.embedding_bag(mode="sum",
per_sample_weights=...)`` over the features laid out as a ``(N*H*W, C)`` table gathers and sums each
bin's reads in one fused call. The adaptive grid (different per RoI) is handled by grouping RoIs by their
``(gh, gw)`` and pooling group by group (one group when ``sampling_ratio > 0``; RoIs of similar size
share a grid, so groups stay few); groups are processed in chunks of about 2^20 samples to bound memory.
Gradients flow to the features through ``embedding_bag`` (its backward scatters the same weights, as
torchvision's backward kernel does); box coordinates get no gradient, as in torchvision.

:class:`MultiScaleRoIAlign` is torchvision's FPN pooler (Lin et al., *Feature Pyramid Networks for
Object Detection*, 2017, Eq. 1): an RoI of size ``w x h`` (input-image pixels) is pooled from level
``k = floor(k0 + log2(sqrt(w h) / 224) + 1e-6)``, clamped to the available levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .boxes import box_area

#: Samples per chunk of RoIs (each sample is four table reads): bounds the index/weight lists to ~100 MB.
SAMPLES_PER_CHUNK = 1 << 20


def _output_size(output_size: int | Sequence[int]) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"output_size must be a positive int or a pair of positive ints, got {output_size!r}")
    return size


def _as_rois(boxes: torch.Tensor | Sequence[torch.Tensor], input: torch.Tensor) -> torch.Tensor:
    """``(K, 5)`` rois ``[batch_index, x1, y1, x2, y2]`` in the input's dtype and device, without gradient."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes as a tensor must be (K, 5) [batch_index, x1, y1, x2, y2], got {tuple(boxes.shape)}"
            )
        rois = boxes
    else:
        for i, b in enumerate(boxes):
            if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.shape[1] != 4:
                shape = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
                raise ValueError(f"boxes as a list must hold (K_i, 4) xyxy tensors; entry {i} is {shape}")
        columns = [torch.cat((torch.full_like(b[:, :1], i), b), dim=1) for i, b in enumerate(boxes)]
        rois = torch.cat(columns) if columns else input.new_zeros(0, 5)
    return rois.detach().to(device=input.device, dtype=input.dtype)


def _roi_grid(
    rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int, aligned: bool
) -> tuple[torch.Tensor, ...]:
    """Per RoI: start ``(y, x)``, bin size ``(h, w)`` in feature pixels and samples per bin ``(gh, gw)``."""
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - offset).unbind(1)
    roi_h, roi_w = y2 - y1, x2 - x1
    if not aligned:  # the legacy kernel makes malformed RoIs 1x1
        roi_h, roi_w = roi_h.clamp(min=1), roi_w.clamp(min=1)
    bin_h, bin_w = roi_h / output_size[0], roi_w / output_size[1]
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(rois[:, 0], sampling_ratio, dtype=torch.long)
    else:
        # ceil(size / bins); a non-finite size gives no samples (the C++ int cast of inf/NaN is negative).
        grid_h, grid_w = (
            torch.where(torch.isfinite(g), g, 0).clamp(min=0).long() for g in (torch.ceil(bin_h), torch.ceil(bin_w))
        )
    return y1, x1, bin_h, bin_w, grid_h, grid_w


def _linear_taps(coord: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's bilinear rule along one axis (it is separable): for coordinates ``(T,)``, the two
    pixel indices ``(T, 2)`` and their weights ``(T, 2)``. Outside ``[-1, size]`` (or NaN) both weights are
    0; otherwise the coordinate is clamped to ``>= 0`` and snaps onto the last pixel from ``size - 1`` on."""
    inside = (coord >= -1) & (coord <= size)
    coord = torch.where(inside, coord.clamp(min=0), 0)
    low = coord.long()  # non-negative: truncation is the floor
    snap = low >= size - 1
    low = torch.where(snap, size - 1, low)
    fraction = torch.where(snap, 0, coord - low)
    taps = torch.stack((low, torch.where(snap, low, low + 1)), dim=1)
    weights = torch.stack((1 - fraction, fraction), dim=1) * inside[:, None]
    return taps, weights


def _pool_same_grid(
    table: torch.Tensor,
    image: torch.Tensor,
    y1: torch.Tensor,
    x1: torch.Tensor,
    bin_h: torch.Tensor,
    bin_w: torch.Tensor,
    grid: tuple[int, int],
    output_size: tuple[int, int],
    feature_size: tuple[int, int],
) -> torch.Tensor:
    """RoIAlign of ``Kc`` RoIs that share the sampling grid ``(gh, gw)``: ``(Kc, oh, ow, C)``.

    Each sample reads the outer product of its row taps and column taps (the rule is separable), so the
    ``(Kc, oh, ow, gh, gw, 2, 2)`` reads, in bin order, are one broadcast of per-axis taps; every bin's
    ``gh * gw * 4`` reads form one ``embedding_bag`` bag. The image's offset in the table and the mean's
    ``1 / (gh * gw)`` ride on the row side.
    """
    (gh, gw), (pooled_h, pooled_w), (height, width) = grid, output_size, feature_size
    count = len(image)
    device, dtype = table.device, table.dtype

    def axis_samples(start, bin_size, bins, samples):
        # The kernel's arithmetic, in the boxes' dtype: start + b * size + (i + 0.5) * size / grid.
        b = torch.arange(bins, device=device, dtype=dtype)[:, None]
        i = torch.arange(samples, device=device, dtype=dtype) + 0.5
        start, bin_size = start[:, None, None], bin_size[:, None, None]
        return (start + b * bin_size) + i * bin_size / samples  # (Kc, bins, samples)

    y_taps, y_weights = _linear_taps(axis_samples(y1, bin_h, pooled_h, gh).flatten(), height)
    x_taps, x_weights = _linear_taps(axis_samples(x1, bin_w, pooled_w, gw).flatten(), width)
    y_taps = (y_taps.view(count, -1, 2) + (image * height)[:, None, None]) * width
    y_weights = y_weights * (1 / max(1, gh * gw))
    index = y_taps.view(count, pooled_h, 1, gh, 1, 2, 1) + x_taps.view(count, 1, pooled_w, 1, gw, 1, 2)
    weight = y_weights.view(count, pooled_h, 1, gh, 1, 2, 1) * x_weights.view(count, 1, pooled_w, 1, gw, 1, 2)
    offsets = torch.arange(count * pooled_h * pooled_w, device=device) * (gh * gw * 4)
    pooled = F.embedding_bag(index.flatten(), table, offsets, mode="sum", per_sample_weights=weight.flatten())
    return pooled.view(count, pooled_h, pooled_w, table.shape[1])


def _roi_align_rows(
    input: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """:func:`roi_align` as ``(K, oh, ow, C)``, the layout it is computed in."""
    if input.dim() != 4:
        raise ValueError(f"input must be (N, C, H, W), got {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"input must be floating point, got {input.dtype}")
    pooled_h, pooled_w = _output_size(output_size)
    rois = _as_rois(boxes, input)
    batch, channels, height, width = input.shape
    num_rois = rois.shape[0]
    if num_rois == 0 or channels == 0:  # no values to compute; keep the result connected to the graph
        return input[:0].reshape(num_rois, pooled_h, pooled_w, channels)
    if height == 0 or width == 0:
        raise ValueError(f"input has an empty feature map {tuple(input.shape)} but {num_rois} RoIs")
    image = rois[:, 0].long()  # the kernel's int cast: truncation
    low, high = image.aminmax()
    if low < 0 or high >= batch:
        raise ValueError(
            f"roi batch indices must be in [0, {batch}) for input {tuple(input.shape)}, got [{low}, {high}]"
        )

    y1, x1, bin_h, bin_w, grid_h, grid_w = _roi_grid(rois, (pooled_h, pooled_w), spatial_scale, sampling_ratio, aligned)
    # Pixel table: one contiguous row of C features per (image, y, x) (embedding_bag's fast path needs
    # contiguous rows); no copy when the input is channels-last.
    table = input.permute(0, 2, 3, 1).reshape(batch * height * width, channels).contiguous()
    # RoIs grouped by their sampling grid (one group when sampling_ratio > 0), in chunks of about
    # SAMPLES_PER_CHUNK samples.
    grid_key = grid_h * (int(grid_w.max()) + 1) + grid_w
    _, group_of_roi, group_sizes = torch.unique(grid_key, return_inverse=True, return_counts=True)
    roi_order = torch.argsort(group_of_roi, stable=True)
    first_of_group = roi_order[torch.cumsum(group_sizes, 0) - group_sizes]
    grids = torch.stack((grid_h[first_of_group], grid_w[first_of_group]), dim=1).tolist()
    pieces = []
    for (gh, gw), group in zip(grids, roi_order.split(group_sizes.tolist())):
        per_chunk = max(1, SAMPLES_PER_CHUNK // max(1, pooled_h * pooled_w * gh * gw))
        for chunk in group.split(per_chunk):
            geometry = (image[chunk], y1[chunk], x1[chunk], bin_h[chunk], bin_w[chunk])
            pooled = _pool_same_grid(table, *geometry, (gh, gw), (pooled_h, pooled_w), (height, width))
            pieces.append((chunk, pooled))
    if len(pieces) == 1:  # one grid, one chunk: the RoIs in their order
        return pieces[0][1]
    rows = table.new_empty(num_rois, pooled_h, pooled_w, channels)
    for chunk, pooled in pieces:
        rows.index_copy_(0, chunk, pooled)
    return rows


def roi_align(
    input: torch.Tensor,
    boxes: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """RoIAlign with the semantics of ``torchvision.ops.roi_align`` (its CPU kernel; see the module docstring).

    Args:
        input: features ``(N, C, H, W)``, floating point (float32 and float64 tested), any device.
        boxes: ``(K, 5)`` rois ``[batch_index, x1, y1, x2, y2]`` (batch index truncated to an int), or a
            list of ``N`` (or fewer) ``(K_i, 4)`` xyxy tensors, one per image. Coordinates are in the input
            image's pixels; they are converted to ``input``'s dtype and device and get no gradient.
        output_size: ``oh`` and ``ow`` (an int for a square grid).
        spatial_scale: feature pixels per image pixel (1/stride, e.g. 0.25).
        sampling_ratio: samples per bin along each axis; ``<= 0`` for the adaptive ``ceil(roi / output)``.
        aligned: shift boxes by -0.5 pixel (pixel-centre model) and allow RoIs below 1x1.

    Returns:
        ``(K, C, oh, ow)`` in ``input``'s dtype, contiguous; differentiable with respect to ``input``.

    Raises:
        ValueError: ``input`` not 4-D or spatially empty while there are RoIs, boxes of the wrong shape,
            a batch index outside ``[0, N)``, or an invalid ``output_size``.
        TypeError: ``input`` not floating point.
    """
    rows = _roi_align_rows(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    return rows.permute(0, 3, 1, 2).contiguous()


def infer_scale(feature_size: int, image_size: int) -> float:
    """The feature map's scale ``2**round(log2(feature_size / image_size))``: torchvision's assumption that a
    pyramid level is the image downsampled by a power of two (padding and odd sizes round away)."""
    return 2.0 ** round(math.log2(feature_size / image_size))


def assign_fpn_levels(
    boxes: torch.Tensor, k_min: int, k_max: int, canonical_scale: float = 224, canonical_level: int = 4
) -> torch.Tensor:
    """FPN level of each ``(K, 4)`` xyxy box (input-image pixels), FPN paper Eq. 1:
    ``floor(k0 + log2(sqrt(area) / canonical_scale) + 1e-6)`` clamped to ``[k_min, k_max]``, as int64.

    The 1e-6 (torchvision's) keeps boxes of exactly ``canonical_scale * 2**j`` on level ``k0 + j``. An
    inverted box counts as area 0 and so lands on ``k_min`` (torchvision's unclamped area would give NaN).
    """
    scale = torch.sqrt(box_area(boxes))
    levels = torch.floor(canonical_level + torch.log2(scale / canonical_scale) + 1e-6)
    return levels.clamp(min=k_min, max=k_max).long()


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over an FPN, with the semantics of ``torchvision.ops.MultiScaleRoIAlign``.

    Each box is pooled from one level, chosen by :func:`assign_fpn_levels`. The levels are the entries
    of ``features`` whose names are in ``featmap_names``, in the dict's order, finest first; their scales
    are inferred from the feature height over the largest image height (:func:`infer_scale`), which
    fixes ``k_min``/``k_max``. RoIAlign runs with ``aligned=False`` by default, as torchvision's poolers do;
    ``aligned=True`` with ``sampling_ratio=0`` is Detectron2's "ROIAlignV2" pooler (whose level rule,
    ``floor(k0 + log2(sqrt(area) / 224 + 1e-8))``, differs from the one here only for boxes within a
    relative 1e-6 of a level boundary).

    Unlike torchvision, which infers the scales on the first call and caches them in the module, this
    module infers them on every call (no state; the same values whenever the image sizes map to the same
    powers of two).

    Args:
        featmap_names: names of the pyramid levels to pool from, e.g. ``["0", "1", "2", "3"]``.
        output_size: ``oh``, ``ow`` (an int for square), e.g. 7 for the box head, 14 for the mask head.
        sampling_ratio: samples per bin per axis (``<= 0``: adaptive), 2 in torchvision's Mask R-CNN.
        canonical_scale: ``224`` in Eq. 1: the box size that maps to ``canonical_level``.
        canonical_level: ``k0 = 4`` in Eq. 1.
        aligned: RoIAlign's pixel-centre model (see :func:`roi_align`).
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int | Sequence[int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = _output_size(output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def forward(
        self,
        features: dict[str, torch.Tensor],
        boxes: Sequence[torch.Tensor],
        image_shapes: Sequence[tuple[int, int]],
    ) -> torch.Tensor:
        """Pool ``(K_i, 4)`` xyxy boxes per image (input-image pixels) from ``features`` (name ->
        ``(N, C, H_l, W_l)``, same C). ``image_shapes``: each image's ``(height, width)`` before padding.

        Returns ``(sum K_i, C, oh, ow)`` in the first level's dtype, rows in the order of the boxes.
        Raises ValueError when no feature is named in ``featmap_names``, channels differ, or
        ``image_shapes`` is empty; :func:`roi_align` raises for malformed boxes.
        """
        levels = [value for name, value in features.items() if name in self.featmap_names]
        if not levels:
            raise ValueError(f"none of {self.featmap_names} in the features {list(features)}")
        if len({level.shape[1] for level in levels}) != 1:
            raise ValueError(f"pyramid levels differ in channels: {[tuple(level.shape) for level in levels]}")
        if not image_shapes:
            raise ValueError("image_shapes must not be empty")
        image_height = max(int(shape[0]) for shape in image_shapes)
        scales = [infer_scale(level.shape[-2], image_height) for level in levels]
        k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))

        rois = _as_rois(boxes, levels[0])
        # Levels from the boxes as given (their dtype), as torchvision computes them.
        coordinates = torch.cat(list(boxes)) if len(boxes) else rois[:, 1:]
        level_of_roi = assign_fpn_levels(coordinates, k_min, k_max, self.canonical_scale, self.canonical_level)
        level_of_roi = level_of_roi.to(rois.device)
        first = levels[0]
        result = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        for k, (feature, scale) in enumerate(zip(levels, scales), start=k_min):
            index = torch.nonzero(level_of_roi == k).flatten()
            # (K_l, oh, ow, C) rows: the assignment is the one layout copy
            pooled = _roi_align_rows(feature, rois[index], self.output_size, scale, self.sampling_ratio, self.aligned)
            result[index] = pooled.permute(0, 3, 1, 2).to(result.dtype)
        return result

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
