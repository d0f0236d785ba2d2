"""Modulated deformable convolution (DCNv2) against a loop reference written from the definition, against
``conv2d`` where offsets are zero or integer, gradcheck, the layer's init and errors, and a printed timing."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panoptic_perception.nn.deform_conv import ModulatedDeformConv2d, modulated_deform_conv2d


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def _reference(input, offset, mask, weight, bias, stride, padding, dilation, groups):
    """DCNv2 from the definition (Zhu et al. Eq. 2; Dai et al. Eq. 3-4 for bilinear sampling), scalar loops:
    y(p0) = Σ_k w_k x(p0 + p_k + Δp_k) Δm_k + b with x(p) = Σ_q max(0, 1 - |q_y - p_y|) max(0, 1 - |q_x - p_x|)
    x(q) over all pixels q of the image (so zeros outside). Offset channel g*2K + 2k is Δy, +1 is Δx."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c_in, height, width = input.shape
    c_out, cpg, kh, kw = weight.shape
    kernel = kh * kw
    out_h, out_w = offset.shape[2:]
    offset_groups = offset.shape[1] // (2 * kernel)
    x, off, w = input.tolist(), offset.tolist(), weight.tolist()
    m = mask.tolist() if mask is not None else None

    def sample(img, py, px):
        total = 0.0
        for qy in range(height):
            for qx in range(width):
                total += max(0.0, 1 - abs(qy - py)) * max(0.0, 1 - abs(qx - px)) * img[qy][qx]
        return total

    out = torch.zeros(n, c_out, out_h, out_w, dtype=torch.float64)
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                for co in range(c_out):
                    group = co // (c_out // groups)
                    acc = 0.0 if bias is None else float(bias[co])
                    for ci_local in range(cpg):
                        ci = group * cpg + ci_local
                        g = ci // (c_in // offset_groups)
                        for i in range(kh):
                            for j in range(kw):
                                k = i * kw + j
                                py = oy * sh - ph + i * dh + off[b][g * 2 * kernel + 2 * k][oy][ox]
                                px = ox * sw - pw + j * dw + off[b][g * 2 * kernel + 2 * k + 1][oy][ox]
                                mod = 1.0 if m is None else m[b][g * kernel + k][oy][ox]
                                acc += w[co][ci_local][i][j] * sample(x[b][ci], py, px) * mod
                    out[b, co, oy, ox] = acc
    return out


def _out_size(size, kernel, stride, padding, dilation):
    return tuple(
        (s + 2 * p - d * (k - 1) - 1) // st + 1 for s, k, st, p, d in zip(size, kernel, stride, padding, dilation)
    )


def _random_case(c_in, c_out, size, kernel, stride, padding, dilation, groups, offset_groups, offset_scale, seed):
    gen = torch.Generator().manual_seed(seed)
    kernel, stride, padding, dilation = map(_pair, (kernel, stride, padding, dilation))
    out_h, out_w = _out_size(size, kernel, stride, padding, dilation)
    k = kernel[0] * kernel[1]
    x = torch.randn(2, c_in, *size, generator=gen, dtype=torch.float64)
    weight = torch.randn(c_out, c_in // groups, *kernel, generator=gen, dtype=torch.float64)
    bias = torch.randn(c_out, generator=gen, dtype=torch.float64)
    offset = torch.randn(2, 2 * offset_groups * k, out_h, out_w, generator=gen, dtype=torch.float64) * offset_scale
    mask = torch.rand(2, offset_groups * k, out_h, out_w, generator=gen, dtype=torch.float64)
    return x, offset, mask, weight, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


# (c_in, c_out, size, kernel, stride, padding, dilation, groups, offset_groups)
CONFIGS = [
    (2, 3, (5, 5), 3, 1, 1, 1, 1, 1),
    (4, 2, (6, 5), (3, 2), (2, 1), (1, 0), (1, 2), 2, 2),
    (4, 4, (5, 6), 3, 1, 2, 2, 4, 4),
]


@pytest.mark.parametrize("seed", range(len(CONFIGS)))
@pytest.mark.parametrize("with_mask", [True, False])
def test_matches_loop_reference_with_fractional_and_out_of_image_offsets(seed, with_mask):
    # offsets ~ N(0, 2.5²) on 5-6 pixel maps: fractional, many partly or fully outside the image
    x, offset, mask, weight, bias, kw = _random_case(*CONFIGS[seed], offset_scale=2.5, seed=seed)
    mask = mask if with_mask else None
    expected = _reference(x, offset, mask, weight, bias, **kw)
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_border_samples_blend_with_zeros():
    # 1x1 kernel, one pixel row: sampling half a pixel left of column 0 gives 0.5 * x[0] (zero padding of the
    # bilinear corners, not clamping); a full pixel or more outside gives 0.
    x = torch.tensor([[[[2.0, 4.0, 8.0]]]], dtype=torch.float64)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    offset[0, 1] = torch.tensor([-0.5, 1.25, 1.0])  # Δx per output column: x = -0.5, 2.25, 3.0
    got = modulated_deform_conv2d(x, offset, None, weight)
    assert got.flatten().tolist() == pytest.approx([1.0, 0.75 * 8.0, 0.0])
    offset[0, 0] = 0.5  # Δy = +0.5 on a one-row map halves every sample again
    got = modulated_deform_conv2d(x, offset, None, weight)
    assert got.flatten().tolist() == pytest.approx([0.5, 0.375 * 8.0, 0.0])


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation, groups",
    [(3, 1, 1, 1, 1), (3, 2, 0, 1, 1), ((3, 1), (1, 2), (2, 0), (2, 1), 2), (1, 1, 0, 1, 4), (5, 3, 3, 2, 2)],
)
def test_zero_offsets_and_unit_masks_equal_conv2d(kernel, stride, padding, dilation, groups):
    torch.manual_seed(0)
    kernel = _pair(kernel)
    x = torch.randn(2, 4, 9, 11)
    weight = torch.randn(8, 4 // groups, *kernel)
    bias = torch.randn(8)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    offset = torch.zeros(2, 2 * kernel[0] * kernel[1], *expected.shape[2:])
    mask = torch.ones(2, kernel[0] * kernel[1], *expected.shape[2:])
    for m in (mask, None):
        got = modulated_deform_conv2d(x, offset, m, weight, bias, stride, padding, dilation, groups)
        assert got.dtype == torch.float32
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def _shifted(x, dy, dx):
    """x'[.., h, w] = x[.., h + dy, w + dx], zero where that lies outside."""
    out = torch.zeros_like(x)
    height, width = x.shape[-2:]
    out[..., max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)] = x[
        ..., max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)
    ]
    return out


def test_integer_offsets_equal_convolution_of_shifted_input():
    # every Δp_k = (Δy, Δx) = (1, -2): channel 2k is Δy, 2k + 1 is Δx (torchvision's layout). No padding,
    # so every undeformed position p0 + p_k lies in the image, where the shifted copy is defined.
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    offset = torch.zeros(2, 18, 6, 8, dtype=torch.float64)
    offset[:, 0::2] = 1.0
    offset[:, 1::2] = -2.0
    got = modulated_deform_conv2d(x, offset, None, weight, None)
    expected = F.conv2d(_shifted(x, 1, -2), weight)
    assert torch.allclose(got, expected, atol=1e-12)
    # the swapped layout would be a different (and here wrong) shift
    assert not torch.allclose(got, F.conv2d(_shifted(x, -2, 1), weight), atol=1e-3)


def test_constant_masks_scale_each_kernel_position():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 7, 7, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    scale = torch.rand(9, dtype=torch.float64)  # Δm_k, k = i * 3 + j
    mask = scale.view(1, 9, 1, 1).expand(1, 9, 7, 7)
    offset = torch.zeros(1, 18, 7, 7, dtype=torch.float64)
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, padding=1)
    expected = F.conv2d(x, weight * scale.view(1, 1, 3, 3), bias, padding=1)
    assert torch.allclose(got, expected, atol=1e-12)
    zero = modulated_deform_conv2d(x, offset, torch.zeros_like(mask), weight, bias, padding=1)
    assert torch.allclose(zero, bias.view(1, 4, 1, 1).expand_as(zero))


def test_offset_groups_move_their_own_channels():
    # 4 input channels, 2 offset groups: group 0 (channels 0-1) unshifted, group 1 (channels 2-3) by (1, -2)
    torch.manual_seed(3)
    x = torch.randn(1, 4, 6, 8, dtype=torch.float64)
    weight = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 2 * 2 * 9, 4, 6, dtype=torch.float64)
    offset[:, 18 + 0 : 36 : 2] = 1.0
    offset[:, 18 + 1 : 36 : 2] = -2.0
    got = modulated_deform_conv2d(x, offset, None, weight)
    moved = torch.cat([x[:, :2], _shifted(x[:, 2:], 1, -2)], dim=1)
    assert torch.allclose(got, F.conv2d(moved, weight), atol=1e-12)


def test_gradcheck_all_inputs():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    # fractional parts in [0.2, 0.8]: samples stay away from pixel rows/columns, where bilinear has kinks
    whole = torch.randint(-2, 2, (1, 2 * 2 * 9, 2, 3), generator=gen).double()
    frac = 0.2 + 0.6 * torch.rand(1, 2 * 2 * 9, 2, 3, generator=gen, dtype=torch.float64)
    offset = (whole + frac).requires_grad_()
    mask = torch.rand(1, 2 * 9, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)

    def fn(x, offset, mask, weight, bias):
        return modulated_deform_conv2d(x, offset, mask, weight, bias, stride=(2, 1), padding=(1, 0), groups=2)

    assert torch.autograd.gradcheck(fn, (x, offset, mask, weight, bias))


def test_float32_agrees_with_float64_and_accepts_channel_slices():
    # ADC-style: offsets and masks sliced from one prediction tensor (non-contiguous views)
    x, offset, mask, weight, bias, kw = _random_case(4, 2, (6, 5), 3, 1, 1, 1, 1, 2, offset_scale=1.5, seed=5)
    expected = modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)
    prediction = torch.cat([offset, mask], dim=1).float().permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    got = modulated_deform_conv2d(x.float(), prediction[:, :36], prediction[:, 36:], weight.float(), bias.float(), **kw)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, atol=1e-4)


def test_layer_initialises_like_conv2d_and_applies_the_op():
    torch.manual_seed(6)
    conv = nn.Conv2d(4, 6, (3, 2), padding=1, groups=2)
    torch.manual_seed(6)
    layer = ModulatedDeformConv2d(4, 6, (3, 2), padding=1, groups=2, offset_groups=2)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert ModulatedDeformConv2d(4, 6, 3, bias=False).bias is None
    x = torch.randn(2, 4, 5, 6)
    out_hw = conv(x).shape[2:]
    offset = torch.randn(2, 2 * 2 * 6, *out_hw)
    mask = torch.rand(2, 2 * 6, *out_hw)
    expected = modulated_deform_conv2d(x, offset, mask, conv.weight, conv.bias, padding=1, groups=2)
    assert torch.equal(layer(x, offset, mask), expected)
    assert torch.allclose(layer(x, torch.zeros_like(offset)), conv(x), atol=1e-5)
    assert torch.allclose(layer(x, offset), layer(x, offset, torch.ones_like(mask)), atol=1e-6)


def test_mismatched_shapes_raise_value_errors_naming_them():
    x = torch.randn(1, 4, 6, 6)
    weight = torch.randn(2, 4, 3, 3)
    offset = torch.zeros(1, 18, 4, 4)
    with pytest.raises(ValueError, match=r"offset \(1, 18, 5, 4\)"):
        modulated_deform_conv2d(x, torch.zeros(1, 18, 5, 4), None, weight)
    with pytest.raises(ValueError, match=r"offset \(1, 17, 4, 4\)"):
        modulated_deform_conv2d(x, torch.zeros(1, 17, 4, 4), None, weight)
    with pytest.raises(ValueError, match=r"G dividing 4"):  # 3 offset groups
        modulated_deform_conv2d(x, torch.zeros(1, 54, 4, 4), None, weight)
    with pytest.raises(ValueError, match=r"mask \(1, 18, 4, 4\)"):
        modulated_deform_conv2d(x, offset, torch.ones(1, 18, 4, 4), weight)
    with pytest.raises(ValueError, match=r"weight \(2, 4, 3, 3\) with groups=2"):
        modulated_deform_conv2d(x, offset, None, weight, groups=2)
    with pytest.raises(ValueError, match=r"bias \(3,\)"):
        modulated_deform_conv2d(x, offset, None, weight, torch.zeros(3))
    with pytest.raises(ValueError, match=r"input must be 4-D, got shape \(4, 6, 6\)"):
        modulated_deform_conv2d(x[0], offset, None, weight)
    with pytest.raises(ValueError, match="stride"):
        modulated_deform_conv2d(x, offset, None, weight, stride=0)
    with pytest.raises(ValueError, match="offset_groups=3"):
        ModulatedDeformConv2d(4, 2, 3, offset_groups=3)
    with pytest.raises(ValueError, match="groups=3"):
        ModulatedDeformConv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match=r"offset \(1, 18, 6, 6\) must have 2 \* offset_groups \* kh \* kw = 36"):
        ModulatedDeformConv2d(4, 2, 3, padding=1, offset_groups=2)(x, torch.zeros(1, 18, 6, 6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x, offset, mask, weight, bias, kw = _random_case(4, 2, (6, 5), 3, 1, 1, 1, 2, 2, offset_scale=1.5, seed=7)
    expected = modulated_deform_conv2d(x, offset, mask, weight, bias, **kw)
    got = modulated_deform_conv2d(*(t.cuda() for t in (x, offset, mask, weight, bias)), **kw)
    assert torch.allclose(got.cpu(), expected, atol=1e-10)
