"""Modulated deformable convolution (DCNv2) in plain torch.

Zhu et al., *Deformable ConvNets v2* (CVPR 2019), as used by CycleNet's ADC module (Qu et al., §3.2, Eq. 4):

    y(p0) = Σ_k w_k · x(p0 + p_k + Δp_k) · Δm_k + b

where ``p0 + p_k`` is the sampling position of an ordinary convolution (stride, padding, dilation) for
kernel position ``k``, ``Δp_k = (Δy, Δx)`` a learned, usually fractional, offset and ``Δm_k`` a learned
modulation scalar (DCNv1 when all ``Δm_k = 1``).

Conventions are those of ``torchvision.ops.deform_conv2d`` (read from its CPU kernel,
``torchvision/csrc/ops/cpu/deform_conv2d_kernel.cpp``), so offsets and masks predicted for torchvision or
the official DCNv2 code work unchanged. With ``K = kh * kw`` kernel positions, ``k = i * kw + j`` (row-major
over the kernel window) and ``G`` offset groups:

- ``offset[:, g * 2K + 2k]`` is Δy (rows) and ``offset[:, g * 2K + 2k + 1]`` is Δx (columns), in input
  pixels;
- ``mask[:, g * K + k]`` is Δm_k of group ``g``;
- input channel ``c`` belongs to offset group ``c // (C_in / G)``.

Bilinear sampling reads zeros outside the image, corner by corner: a sample within one pixel of the border
blends the valid pixels with zeros, and a sample a full pixel or more outside is zero (as in DCN's CUDA/CPU
kernels). It is done by ``torch.nn.functional.grid_sample`` (``mode="bilinear"``, ``padding_mode="zeros"``),
whose analytic backward gives the gradients with respect to input and offsets. Pixel coordinates are mapped
to grid_sample's [-1, 1] with ``align_corners=False`` (``u = (2x + 1) / W - 1``, pixel centres at integers),
which, unlike ``align_corners=True``, is also defined for maps one pixel wide. The sampled columns (im2col,
``(N, C_in * K, H_out * W_out)``) are then multiplied by the reshaped weights in one batched matmul per
convolution group.

As with torchvision's kernel, the gradient with respect to an offset is one-sided where a sample falls
exactly on a pixel row or column (bilinear interpolation has a kink there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def _positive_pair(value: int | tuple[int, int], name: str, minimum: int) -> tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or any(int(v) != v or v < minimum for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def modulated_deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Modulated deformable 2-D convolution (DCNv2; DCNv1 when ``mask`` is None).

    Args:
        input: ``(N, C_in, H, W)`` float tensor.
        offset: ``(N, 2 * G * kh * kw, H_out, W_out)``, same dtype/device; ``G`` (offset groups) is
            ``offset.shape[1] // (2 * kh * kw)`` and must divide ``C_in``. Channel ``g * 2K + 2k`` holds Δy
            and ``g * 2K + 2k + 1`` holds Δx (input pixels) of kernel position ``k = i * kw + j`` of group
            ``g`` (torchvision's layout; see the module docstring).
        mask: ``(N, G * kh * kw, H_out, W_out)`` modulation scalars (channel ``g * K + k``), or None for all
            ones.
        weight: ``(C_out, C_in / groups, kh, kw)``, as for ``torch.nn.functional.conv2d``.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: int or ``(h, w)`` pair, as for a normal convolution; ``H_out =
            (H + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1`` and likewise ``W_out``.
        groups: convolution groups (blocked connections between input and output channels), independent of
            the offset groups.

    Returns:
        ``(N, C_out, H_out, W_out)`` in the dtype of ``input``; differentiable with respect to input, offset,
        mask, weight and bias.

    Raises:
        ValueError: when a tensor has the wrong number of dimensions or a shape that does not fit the others
            (the message names the shapes), or stride/padding/dilation/groups are invalid.
    """
    stride_h, stride_w = _positive_pair(stride, "stride", 1)
    pad_h, pad_w = _positive_pair(padding, "padding", 0)
    dil_h, dil_w = _positive_pair(dilation, "dilation", 1)
    for name, tensor in (("input", input), ("offset", offset), ("weight", weight)):
        if tensor.dim() != 4:
            raise ValueError(f"{name} must be 4-D, got shape {tuple(tensor.shape)}")
    n, c_in, height, width = input.shape
    c_out, c_in_per_group, kh, kw = weight.shape
    kernel = kh * kw
    if groups < 1 or c_in % groups or c_out % groups or c_in_per_group * groups != c_in:
        raise ValueError(
            f"weight {tuple(weight.shape)} with groups={groups} does not fit input {tuple(input.shape)}: "
            "need C_in = weight.shape[1] * groups and C_out divisible by groups"
        )
    out_h = (height + 2 * pad_h - dil_h * (kh - 1) - 1) // stride_h + 1
    out_w = (width + 2 * pad_w - dil_w * (kw - 1) - 1) // stride_w + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"input {tuple(input.shape)} is smaller than the dilated kernel {(kh, kw)} after padding {(pad_h, pad_w)}"
        )
    offset_groups = offset.shape[1] // (2 * kernel)
    if (
        offset.shape[0] != n
        or offset_groups < 1
        or offset.shape[1] != 2 * kernel * offset_groups
        or c_in % offset_groups
        or tuple(offset.shape[2:]) != (out_h, out_w)
    ):
        raise ValueError(
            f"offset {tuple(offset.shape)} does not fit input {tuple(input.shape)} and weight "
            f"{tuple(weight.shape)}: expected ({n}, 2 * G * {kernel}, {out_h}, {out_w}) with G dividing {c_in}"
        )
    if mask is not None and tuple(mask.shape) != (n, offset_groups * kernel, out_h, out_w):
        raise ValueError(
            f"mask {tuple(mask.shape)} does not fit offset {tuple(offset.shape)}: expected "
            f"{(n, offset_groups * kernel, out_h, out_w)}"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias {tuple(bias.shape)} does not fit weight {tuple(weight.shape)}: expected ({c_out},)")

    # Sampling positions in input pixels, (N, G, K, H_out, W_out): regular grid + learned offsets.
    ki = torch.arange(kh, device=input.device, dtype=input.dtype).repeat_interleave(kw)  # k -> i
    kj = torch.arange(kw, device=input.device, dtype=input.dtype).repeat(kh)  # k -> j
    rows = torch.arange(out_h, device=input.device, dtype=input.dtype) * stride_h - pad_h
    cols = torch.arange(out_w, device=input.device, dtype=input.dtype) * stride_w - pad_w
    base_y = (rows.view(1, out_h, 1) + dil_h * ki.view(kernel, 1, 1)).expand(kernel, out_h, out_w)
    base_x = (cols.view(1, 1, out_w) + dil_w * kj.view(kernel, 1, 1)).expand(kernel, out_h, out_w)
    delta = offset.reshape(n, offset_groups, kernel, 2, out_h, out_w)
    y = base_y + delta[:, :, :, 0]
    x = base_x + delta[:, :, :, 1]

    # grid_sample with align_corners=False places pixel centre x at (2x + 1) / W - 1.
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    grid = grid.view(n * offset_groups, kernel * out_h, out_w, 2)
    per_group = input.reshape(n * offset_groups, c_in // offset_groups, height, width)
    sampled = F.grid_sample(per_group, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(n, offset_groups, c_in // offset_groups, kernel, out_h * out_w)
    if mask is not None:
        sampled = sampled * mask.reshape(n, offset_groups, 1, kernel, out_h * out_w)

    # im2col: column row c * K + k matches weight.view(C_out, C_in / groups * K) within each group.
    columns = sampled.view(n, groups, c_in_per_group * kernel, out_h * out_w)
    out = torch.matmul(weight.reshape(groups, c_out // groups, c_in_per_group * kernel), columns)
    out = out.view(n, c_out, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


class ModulatedDeformConv2d(nn.Module):
    """A modulated deformable convolution layer (DCNv2) whose offsets and masks come from the caller.

    CycleNet's ADC (§3.2) predicts ``offset`` and ``mask`` with ordinary convolutions from the concatenated
    low- and high-level features; this layer only applies them (see :func:`modulated_deform_conv2d` for the
    layout). Weights are initialised like ``nn.Conv2d`` (same draws for the same seed).

    Args:
        in_channels, out_channels: channel counts; both divisible by ``groups``, and ``in_channels`` by
            ``offset_groups``.
        kernel_size, stride, padding, dilation: int or ``(h, w)`` pair, as in ``nn.Conv2d``.
        groups: convolution groups.
        offset_groups: groups of input channels sharing one set of offsets and masks.
        bias: whether to add a learned bias.

    Shapes in ``forward(x, offset, mask=None)``: ``x (N, in_channels, H, W)``, ``offset (N, 2 *
    offset_groups * kh * kw, H_out, W_out)``, ``mask (N, offset_groups * kh * kw, H_out, W_out)`` or None
    (DCNv1); returns ``(N, out_channels, H_out, W_out)``.

    Raises:
        ValueError: for channel counts the groups do not divide, and (in forward) for shapes that do not fit.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels={in_channels} and out_channels={out_channels} must be divisible by groups={groups}"
            )
        if offset_groups < 1 or in_channels % offset_groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by offset_groups={offset_groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _positive_pair(kernel_size, "kernel_size", 1)
        self.stride = _positive_pair(stride, "stride", 1)
        self.padding = _positive_pair(padding, "padding", 0)
        self.dilation = _positive_pair(dilation, "dilation", 1)
        self.groups = groups
        self.offset_groups = offset_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialisation: Kaiming-uniform weights (a = √5), bias U(±1/√fan_in)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())  # fan_in
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        kernel = self.kernel_size[0] * self.kernel_size[1]
        if offset.dim() != 4 or offset.shape[1] != 2 * self.offset_groups * kernel:
            raise ValueError(
                f"offset {tuple(offset.shape)} must have 2 * offset_groups * kh * kw = "
                f"{2 * self.offset_groups * kernel} channels"
            )
        return modulated_deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"offset_groups={self.offset_groups}, bias={self.bias is not None}"
        )
