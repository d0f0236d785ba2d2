"""RoIAlign against a loop-by-loop reference of the definition; gradcheck; the FPN pooler against
torchvision's ``MultiScaleRoIAlign``; a printed timing."""

from __future__ import annotations

import math

import pytest
import torch

from panoptic_perception.nn import roi_align as roi_align_module
from panoptic_perception.nn.roi_align import (
    assign_fpn_levels,
    infer_scale,
    MultiScaleRoIAlign,
    roi_align,
)


def _bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """One sample of a (C, H, W) map with the Mask R-CNN kernel's border rules, scalar by scalar."""
    height, width = feature.shape[1:]
    if y < -1 or y > height or x < -1 or x > width:
        return torch.zeros(feature.shape[0], dtype=feature.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * feature[:, y0, x0]
        + (1 - ly) * lx * feature[:, y0, x1]
        + ly * (1 - lx) * feature[:, y1, x0]
        + ly * lx * feature[:, y1, x1]
    )


def reference_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """RoIAlign straight from the definition: per RoI, per bin, per sample, in Python floats."""
    features = features.double()
    out_h, out_w = output_size
    out = torch.zeros(len(rois), features.shape[1], out_h, out_w, dtype=torch.float64)
    for k, (image, *corners) in enumerate(rois.double().tolist()):
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (c * spatial_scale - offset for c in corners)
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_w)
        count = max(grid_h * grid_w, 1)
        for py in range(out_h):
            for px in range(out_w):
                total = torch.zeros(features.shape[1], dtype=torch.float64)
                for iy in range(grid_h):
                    y = y1 + py * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + px * bin_w + (ix + 0.5) * bin_w / grid_w
                        total += _bilinear(features[int(image)], y, x)
                out[k, :, py, px] = total / count
    return out


HEIGHT, WIDTH = 9, 11


def _test_rois(scale: float) -> torch.Tensor:
    """(K, 5) rois on 3 images, in image pixels for a map of HEIGHT x WIDTH at ``scale``."""
    generator = torch.Generator().manual_seed(1)
    corner = torch.rand(8, 2, generator=generator) * torch.tensor([WIDTH - 1.0, HEIGHT - 1.0])
    size = torch.rand(8, 2, generator=generator) * 6 + 0.5
    random_boxes = torch.cat((corner, corner + size), dim=1)
    special = torch.tensor(
        [
            [2.3, 3.1, 2.7, 3.4],  # sub-pixel
            [0.2, 0.6, 0.9, 1.3],  # sub-pixel at the first row/column
            [-3.5, -2.2, 4.1, 3.3],  # partly outside, top left
            [7.2, 5.5, 14.9, 12.6],  # partly outside, bottom right
            [-8.0, -7.0, -3.0, -2.5],  # wholly outside, above left
            [13.0, 11.0, 17.5, 14.0],  # wholly outside, below right
            [4.4, 4.4, 4.4, 4.4],  # a point
            [1.0, 2.0, 1.0, 6.0],  # a vertical line
            [6.0, 5.0, 3.0, 2.0],  # inverted
            [5.0, 6.5, 11.0, 9.0],  # reaching the last row and column (samples snap)
            [9.6, 7.7, 10.9, 8.8],  # inside the last pixel row/column
            [-1.2, -0.7, 12.0, 10.0],  # the whole map and a margin
        ]
    )
    boxes = torch.cat((random_boxes, special)) / scale
    images = torch.randint(0, 3, (len(boxes), 1), generator=generator).double()
    return torch.cat((images, boxes.double()), dim=1)


@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.25])
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_reference_loops(aligned, spatial_scale, sampling_ratio):
    torch.manual_seed(0)
    features = torch.randn(3, 2, HEIGHT, WIDTH, dtype=torch.float64)
    rois = _test_rois(spatial_scale)
    expected = reference_roi_align(features, rois, (3, 2), spatial_scale, sampling_ratio, aligned)
    assert expected.abs().sum() > 0
    out = roi_align(features, rois, (3, 2), spatial_scale, sampling_ratio, aligned)
    assert out.shape == (len(rois), 2, 3, 2) and out.dtype == torch.float64 and out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    # float32: the same boxes and features rounded to float32, against the reference on those values
    features32, rois32 = features.float(), rois.float()
    expected32 = reference_roi_align(features32, rois32, (3, 2), spatial_scale, sampling_ratio, aligned)
    out32 = roi_align(features32, rois32, (3, 2), spatial_scale, sampling_ratio, aligned)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), expected32, rtol=0, atol=1e-5)


def test_box_list_square_output_and_positional_call():
    """Boxes as a list per image equal the (K, 5) form; an int output size is square; the positional
    call test/oracles.py makes for ``torchvision::roi_align`` works."""
    torch.manual_seed(0)
    features = torch.randn(2, 3, HEIGHT, WIDTH, dtype=torch.float64)
    boxes = [torch.tensor([[1.0, 1.5, 6.0, 7.0], [0.0, 0.0, 3.0, 2.0]]), torch.tensor([[2.5, 0.5, 9.0, 4.5]])]
    rois = torch.tensor([[0, 1.0, 1.5, 6.0, 7.0], [0, 0.0, 0.0, 3.0, 2.0], [1, 2.5, 0.5, 9.0, 4.5]])
    from_list = roi_align(features, boxes, 4, 0.5, 2, True)
    assert from_list.shape == (3, 3, 4, 4)
    torch.testing.assert_close(from_list, roi_align(features, rois, (4, 4), 0.5, 2, True), rtol=0, atol=0)
    torch.testing.assert_close(from_list, reference_roi_align(features, rois, (4, 4), 0.5, 2, True), rtol=0, atol=1e-10)


def test_chunking_and_memory_layout_do_not_change_values(monkeypatch):
    torch.manual_seed(0)
    features = torch.randn(3, 4, HEIGHT, WIDTH)
    rois = _test_rois(1.0).float()
    whole = roi_align(features, rois, (3, 3), 1.0, -1, False)
    channels_last = roi_align(features.contiguous(memory_format=torch.channels_last), rois, (3, 3), 1.0, -1, False)
    torch.testing.assert_close(channels_last, whole, rtol=0, atol=0)
    monkeypatch.setattr(roi_align_module, "SAMPLES_PER_CHUNK", 50)  # dozens of chunks, some single RoIs
    torch.testing.assert_close(roi_align(features, rois, (3, 3), 1.0, -1, False), whole, rtol=0, atol=0)


@pytest.mark.parametrize(("sampling_ratio", "aligned"), [(-1, False), (2, True)])
def test_gradcheck(sampling_ratio, aligned):
    torch.manual_seed(0)
    features = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.4, 0.3, 3.9, 4.6], [1, -1.5, 2.0, 7.0, 5.5], [1, 2.2, 1.1, 2.6, 1.8], [0, 4.0, 3.0, 6.0, 5.0]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (2, 3), 1.0, sampling_ratio, aligned), (features,))


def test_no_rois_and_errors():
    features = torch.randn(2, 3, 5, 6, requires_grad=True)
    empty = roi_align(features, torch.zeros(0, 5), 7)
    assert empty.shape == (0, 3, 7, 7)
    empty.sum().backward()  # still part of the graph
    assert torch.equal(features.grad, torch.zeros_like(features))
    assert roi_align(features, [torch.zeros(0, 4), torch.zeros(0, 4)], (2, 3)).shape == (0, 3, 2, 3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        roi_align(features[0], torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match=r"\(K, 5\).*\(3, 4\)"):
        roi_align(features, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"entry 1 is \(2, 5\)"):
        roi_align(features, [torch.zeros(1, 4), torch.zeros(2, 5)], 2)
    with pytest.raises(ValueError, match=r"batch indices must be in \[0, 2\)"):
        roi_align(features, torch.tensor([[2.0, 0, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(features, torch.zeros(1, 5), (2, 0))
    with pytest.raises(TypeError, match="floating point"):
        roi_align(features.long(), torch.zeros(1, 5), 2)


def test_fpn_level_assignment_and_scale_inference_hand_computed():
    sides = torch.tensor([224.0, 112.0, 111.0, 448.0, 896.0, 10.0, 0.0])
    boxes = torch.stack((torch.zeros(7), torch.zeros(7), sides, sides), dim=1)
    # floor(4 + log2(side / 224)): exact powers of two land on their level, 111 just below 3
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [4, 3, 2, 5, 5, 2, 2]
    assert assign_fpn_levels(boxes, 2, 5, canonical_scale=112, canonical_level=3).tolist() == [4, 3, 2, 5, 5, 2, 2]
    assert infer_scale(200, 800) == 0.25 and infer_scale(25, 800) == 1 / 32
    assert infer_scale(13, 800) == 1 / 64  # 13/800 = 2**-5.94
    assert infer_scale(128, 500) == 0.25  # a padded batch: 128/500 = 2**-1.97


@pytest.mark.parametrize(("output_size", "sampling_ratio"), [(7, 2), ((14, 14), 0)])
def test_multiscale_matches_torchvision(output_size, sampling_ratio):
    from oracles import torchvision_or_skip

    torchvision = torchvision_or_skip()
    torch.manual_seed(0)
    # A padded batch of two 500x640 / 512x600 images and its stride 4..32 pyramid (+ an unused "pool").
    features = {
        name: torch.randn(2, 4, 512 // stride, 640 // stride)
        for name, stride in (("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64))
    }
    image_shapes = [(500, 640), (512, 600)]
    boxes = []
    for height, width in image_shapes:
        side = torch.exp(torch.empty(40, 2).uniform_(math.log(4), math.log(600)))  # levels 2..5 and clamps
        corner = torch.rand(40, 2) * torch.tensor([width, height])
        exact = torch.tensor([[10, 10, 10 + s, 10 + s] for s in (56.0, 112.0, 224.0, 448.0)])
        boxes.append(torch.cat((torch.cat((corner, corner + side), dim=1), exact)))
    names = ["0", "1", "2", "3"]
    ours = MultiScaleRoIAlign(names, output_size, sampling_ratio)(features, boxes, image_shapes)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, output_size, sampling_ratio)(features, boxes, image_shapes)
    assert ours.shape == (88, 4, *((output_size,) * 2 if isinstance(output_size, int) else output_size))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # every level is used, so the comparison covers the level mapping and each level's scale
    levels = assign_fpn_levels(torch.cat(boxes), 2, 5)
    assert set(levels.tolist()) == {2, 3, 4, 5}


def test_multiscale_is_differentiable_and_rejects_bad_input():
    features = {"0": torch.randn(1, 2, 16, 16, requires_grad=True), "1": torch.randn(1, 2, 8, 8, requires_grad=True)}
    pooler = MultiScaleRoIAlign(["0", "1"], 2, 2, canonical_scale=8, canonical_level=2)
    out = pooler(features, [torch.tensor([[0.0, 0.0, 6.0, 6.0], [30.0, 30.0, 60.0, 60.0]])], [(64, 64)])
    out.sum().backward()  # floor(2 + log2(side / 8)): level 2 (scale 1/4) for side 6, level 3 (1/8) for 30
    assert features["0"].grad.abs().sum() > 0 and features["1"].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="none of"):
        pooler({"p2": features["0"]}, [torch.zeros(1, 4)], [(64, 64)])
    with pytest.raises(ValueError, match="channels"):
        pooler({"0": features["0"], "1": torch.randn(1, 3, 8, 8)}, [torch.zeros(1, 4)], [(64, 64)])
    with pytest.raises(ValueError, match="image_shapes"):
        pooler(features, [torch.zeros(1, 4)], [])


def test_multi_scale_pooler_with_aligned_runs_roialign_v2_on_each_boxs_level():
    """Detectron2's ROIAlignV2 pooler: aligned RoIAlign, adaptive sampling, on the level of Eq. 1."""
    generator = torch.Generator().manual_seed(0)
    features = {"0": torch.randn(1, 4, 32, 48, generator=generator), "1": torch.randn(1, 4, 16, 24, generator=generator)}
    boxes = [torch.tensor([[3.0, 5.0, 40.0, 30.0], [10.5, 2.25, 150.0, 120.0], [0.0, 0.0, 7.0, 9.0]])]
    pooled = MultiScaleRoIAlign(["0", "1"], 7, 0, aligned=True)(features, boxes, [(128, 192)])
    levels = assign_fpn_levels(boxes[0], 2, 3).tolist()
    assert levels == [2, 3, 2]  # sqrt(area) 30.4, 128.2 and 7.9 against 224 / 4 and 224 / 2
    for index, level in enumerate(levels):
        rois = torch.cat((torch.zeros(1, 1), boxes[0][index : index + 1]), dim=1)
        scale = 0.25 if level == 2 else 0.125
        expected = roi_align(features[str(level - 2)], rois, 7, scale, 0, aligned=True)
        torch.testing.assert_close(pooled[index : index + 1], expected, rtol=0, atol=1e-6)
        assert not torch.allclose(expected, roi_align(features[str(level - 2)], rois, 7, scale, 0, aligned=False))
