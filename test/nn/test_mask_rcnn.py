"""Mask R-CNN against torchvision 0.28's ``maskrcnn_resnet50_fpn`` (test-only reference, running our NMS and
RoIAlign): key layout and parameter count at full size, and outputs and losses of a narrow model.

How the parity tests drive torchvision: its ``MaskRCNN`` is built around a copy of *our* backbone
(ResNet width 0.25, FPN 32 channels; the backbone's own parity is test_fpn's) with heads of the same
small sizes, and our random weights are loaded into it, so both models hold identical parameters. Its
``GeneralizedRCNNTransform`` (resize + normalise) is bypassed: we call its ``backbone``, ``rpn`` and
``roi_heads`` with an ``ImageList`` of our padded batch, then ``transform.postprocess`` with equal
original and resized sizes (identity box scaling, masks pasted at the image sizes), which is exactly
what our model does without a transform.

Tolerances: in float64 everything is compared in order, boxes/scores/losses to rounding (no operation
differs in order of evaluation except the mask pasting, which interpolates by matrix products: 1e-12).
In float32, proposals' objectness probabilities near 0.5 often tie exactly, and torchvision's batched NMS
re-sorts its kept boxes with an unstable sort, so tied proposals may come in either order: proposals are
compared as sets and detections after sorting by (score, box, label); boxes to 1e-3 px, scores to 1e-6
relative, masks to 2e-6 (float32 rounding of the interpolation, whose terms are summed in another order).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from oracles import torchvision_or_skip

from panoptic_perception.nn import count_parameters
from panoptic_perception.nn.mask_rcnn import MaskRCNN, adapt_predictor_classes, batch_images

NUM_CLASSES = 5
SMALL = {"width": 0.25, "fpn_channels": 32, "representation_size": 64, "mask_layers": (16, 16, 16, 16)}
IMAGE_SIZES = [(150, 220), (128, 192)]  # padded to 160 x 224


def image_batch():
    generator = torch.Generator().manual_seed(3)
    return batch_images([torch.randn(3, h, w, generator=generator) for h, w in IMAGE_SIZES])


def randomized(model: MaskRCNN, seed: int = 1) -> MaskRCNN:
    """Non-trivial weights: frozen-BN statistics and affine terms, every bias, then the FPN outputs scaled
    to unit spread on the test batch (a randomly initialised ResNet's features are ~500, which saturates
    every score and leaves nothing to compare), and class-score rows of zero mean without biases (the
    ReLU box features share a positive mean that would otherwise make one class win everywhere)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dim() != 1:
                continue
            if name.endswith("running_var") or (name.startswith("backbone.body") and name.endswith("weight")):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:  # running means and all biases
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
        images, _ = image_batch()
        stages = model.backbone.body(images)
        pyramid = model.backbone.fpn(OrderedDict((str(i), c) for i, c in enumerate(stages.values())))
        spread = max(level.std() for level in pyramid.values())
        for block in model.backbone.fpn.layer_blocks:
            block[0].weight /= spread
            block[0].bias /= spread
        classifier = model.roi_heads.box_predictor.cls_score
        classifier.weight.sub_(classifier.weight.mean(dim=1, keepdim=True)).mul_(3)
        classifier.bias.zero_()
    return model


def small_models(dtype: torch.dtype = torch.float32, **thresholds) -> tuple[MaskRCNN, torch.nn.Module]:
    """Our narrow Mask R-CNN and torchvision's MaskRCNN with the same (random) weights, in ``dtype``."""
    tv = torchvision_or_skip()
    from torchvision.models.detection import faster_rcnn, mask_rcnn, rpn

    torch.manual_seed(0)
    ours = randomized(MaskRCNN(NUM_CLASSES, **SMALL, **thresholds))
    channels, hidden, mask_layers = SMALL["fpn_channels"], SMALL["representation_size"], SMALL["mask_layers"]
    reference = tv.models.detection.MaskRCNN(
        copy.deepcopy(ours.backbone),
        num_classes=None,
        rpn_head=rpn.RPNHead(channels, 3),
        box_head=faster_rcnn.TwoMLPHead(channels * 7 * 7, hidden),
        box_predictor=faster_rcnn.FastRCNNPredictor(hidden, NUM_CLASSES),
        mask_head=mask_rcnn.MaskRCNNHeads(channels, mask_layers, 1),
        mask_predictor=mask_rcnn.MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], NUM_CLASSES),
        **thresholds,
    )
    reference.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(dtype), reference.to(dtype)


def reference_outputs(reference, images, image_sizes, targets=None):
    """torchvision's proposals and detections (eval) or losses (training) without its transform."""
    from torchvision.models.detection.image_list import ImageList

    features = reference.backbone(images)
    proposals, rpn_losses = reference.rpn(ImageList(images, image_sizes), features, targets)
    detections, head_losses = reference.roi_heads(features, proposals, image_sizes, targets)
    if reference.training:
        return proposals, {**rpn_losses, **head_losses}
    return proposals, reference.transform.postprocess(detections, image_sizes, image_sizes)


def sorted_rows(boxes: torch.Tensor) -> torch.Tensor:
    return boxes[np.lexsort(boxes.T.numpy()[::-1])]


def canonical(detection: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detections sorted by descending score, then box and label: the order up to ties."""
    keys = torch.cat((detection["boxes"], detection["labels"][:, None].to(detection["boxes"])), dim=1)
    order = np.lexsort(np.concatenate((keys.T.numpy()[::-1], -detection["scores"][None].numpy())))
    return {name: value[torch.from_numpy(order)] for name, value in detection.items()}


def test_state_dict_and_parameter_count_equal_torchvision_maskrcnn_resnet50_fpn():
    tv = torchvision_or_skip()
    with torch.device("meta"):
        reference = tv.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
        ours = MaskRCNN(91)
        ours_batchnorm = MaskRCNN(91, norm_layer=torch.nn.BatchNorm2d)
        ours_101 = MaskRCNN(91, depth=101)
    # Without weights torchvision's body has nn.BatchNorm2d (num_batches_tracked); with them FrozenBatchNorm2d.
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    actual = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert actual == expected and list(actual) == list(expected)
    assert len(expected) == 307 and len(reference.state_dict()) == 360
    assert {k.split(".")[0] for k in expected} == {"backbone", "rpn", "roi_heads"}
    assert [k for k in expected if k.startswith("rpn.")] == [
        "rpn.head.conv.0.0.weight", "rpn.head.conv.0.0.bias", "rpn.head.cls_logits.weight", "rpn.head.cls_logits.bias",
        "rpn.head.bbox_pred.weight", "rpn.head.bbox_pred.bias",
    ]
    assert "roi_heads.mask_head.3.0.weight" in expected and "roi_heads.mask_predictor.conv5_mask.weight" in expected
    assert list(ours_batchnorm.state_dict()) == list(reference.state_dict())
    # Parameters: torchvision's 44,454,513 counts the BatchNorm affine terms; frozen, they are buffers and
    # 44,401,393 remain (the figure torchvision's COCO_V1 weights list as num_params).
    assert count_parameters(reference) == count_parameters(ours_batchnorm) == 44_454_513
    assert count_parameters(ours) == 44_401_393
    assert count_parameters(ours_101) - count_parameters(ours) == 17 * (count_parameters(ours.backbone.body.layer3[1]))
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)  # num_batches_tracked ignored
    trainable_body = {
        n.split(".")[2] for n, p in ours.named_parameters() if n.startswith("backbone.body") and p.requires_grad
    }
    assert trainable_body == {"layer2", "layer3", "layer4"}  # torchvision's default of 3 trainable layers


def test_eval_outputs_equal_torchvision_in_float64():
    ours, reference = small_models(torch.float64)
    ours.eval(), reference.eval()
    images, image_sizes = image_batch()
    images = images.double()
    with torch.no_grad():
        features, detections = ours.forward_with_features(images, image_sizes)
        proposals, _ = ours.rpn(features, image_sizes, tuple(images.shape[-2:]))
        expected_proposals, expected = reference_outputs(reference, images, image_sizes)
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(40, 56), (20, 28), (10, 14), (5, 7), (3, 4)]
    for actual, wanted in zip(proposals, expected_proposals):
        assert len(actual) > 500  # many proposals survive: a real comparison
        torch.testing.assert_close(actual, wanted, rtol=0, atol=1e-9)
    for actual, wanted, (height, width) in zip(detections, expected, image_sizes):
        assert len(actual["boxes"]) == 100 and actual["scores"].max() - actual["scores"].min() > 1e-3
        torch.testing.assert_close(actual["boxes"], wanted["boxes"], rtol=0, atol=1e-9)
        torch.testing.assert_close(actual["scores"], wanted["scores"], rtol=1e-12, atol=0)
        assert torch.equal(actual["labels"], wanted["labels"]) and len(actual["labels"].unique()) > 1
        assert actual["masks"].shape == (100, 1, height, width)
        assert actual["masks"].max() > 0.5 and (actual["masks"] == 0).any()
        torch.testing.assert_close(actual["masks"], wanted["masks"], rtol=0, atol=1e-12)


def test_eval_outputs_equal_torchvision_in_float32_up_to_tied_scores():
    ours, reference = small_models(torch.float32)
    ours.eval(), reference.eval()
    images, image_sizes = image_batch()
    with torch.no_grad():
        features, detections = ours.forward_with_features(images, image_sizes)
        proposals, _ = ours.rpn(features, image_sizes, tuple(images.shape[-2:]))
        expected_proposals, expected = reference_outputs(reference, images, image_sizes)
    for actual, wanted in zip(proposals, expected_proposals):
        assert torch.equal(sorted_rows(actual), sorted_rows(wanted))
    for actual, wanted in zip(detections, expected):
        actual, wanted = canonical(actual), canonical(wanted)
        torch.testing.assert_close(actual["boxes"], wanted["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(actual["scores"], wanted["scores"], rtol=1e-6, atol=0)
        assert torch.equal(actual["labels"], wanted["labels"])
        torch.testing.assert_close(actual["masks"], wanted["masks"], rtol=0, atol=2e-6)


def training_targets(image_sizes, dtype):
    """Three objects in the first image (rectangular boxes, masks their left halves), none in the second."""
    generator = torch.Generator().manual_seed(5)
    height, width = image_sizes[0]
    corner = torch.rand(3, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6])
    size = torch.rand(3, 2, generator=generator) * torch.tensor([width * 0.35, height * 0.35]) + 8
    boxes = torch.cat((corner, corner + size), dim=1).to(dtype)
    masks = torch.zeros(3, height, width, dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.round().long().tolist()):
        mask[y0:y1, x0 : (x0 + x1) // 2] = 1
    empty_height, empty_width = image_sizes[1]
    return [
        {"boxes": boxes, "labels": torch.tensor([1, 4, 2]), "masks": masks},
        {"boxes": torch.zeros(0, 4, dtype=dtype), "labels": torch.zeros(0, dtype=torch.long),
         "masks": torch.zeros(0, empty_height, empty_width, dtype=torch.uint8)},
    ]


def test_training_losses_equal_torchvision_with_the_same_seed():
    """Both samplers draw torch.randperm in the same order, so one seed gives the same samples."""
    ours, reference = small_models(torch.float64)
    ours.train(), reference.train()
    images, image_sizes = image_batch()
    images = images.double()
    targets = training_targets(image_sizes, torch.float64)
    torch.manual_seed(11)
    losses = ours(images, image_sizes, targets)
    torch.manual_seed(11)
    _, expected = reference_outputs(reference, images, image_sizes, targets)
    names = ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"]
    assert sorted(losses) == sorted(expected) == sorted(names)
    for name in names:  # torchvision's RPN labels are float32 whatever the dtype, so is its objectness loss
        assert losses[name] > 0 and losses[name].dtype == torch.float64, name
        tolerance = 1e-6 if name == "loss_objectness" else 1e-9
        torch.testing.assert_close(losses[name], expected[name].double(), rtol=tolerance, atol=0, msg=name)
    torch.manual_seed(12)  # another draw samples other anchors and proposals
    assert ours(images, image_sizes, targets)["loss_classifier"] != losses["loss_classifier"]


def test_gradients_reach_the_trainable_backbone_and_every_head():
    torch.manual_seed(0)
    model = MaskRCNN(NUM_CLASSES, **SMALL).train()
    images, image_sizes = image_batch()
    losses = model(images, image_sizes, training_targets(image_sizes, torch.float32))
    sum(losses.values()).backward()
    for name, parameter in model.named_parameters():
        if name.startswith(("backbone.body.conv1", "backbone.body.layer1")):  # frozen: trainable_layers=3
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_adapt_predictor_classes_by_hand():
    state = {
        "backbone.fpn.x": torch.zeros(2),
        "roi_heads.box_predictor.cls_score.weight": torch.arange(4.0)[:, None].repeat(1, 3),
        "roi_heads.box_predictor.cls_score.bias": torch.arange(4.0),
        "roi_heads.box_predictor.bbox_pred.weight": torch.arange(16.0)[:, None].repeat(1, 3),
        "roi_heads.box_predictor.bbox_pred.bias": torch.arange(16.0),
        "roi_heads.mask_predictor.mask_fcn_logits.weight": torch.arange(4.0).view(4, 1, 1, 1).repeat(1, 2, 1, 1),
        "roi_heads.mask_predictor.mask_fcn_logits.bias": torch.arange(4.0),
    }
    adapted = adapt_predictor_classes(state, [0, 3, 1])
    assert list(adapted) == list(state) and adapted["backbone.fpn.x"] is state["backbone.fpn.x"]
    assert adapted["roi_heads.box_predictor.cls_score.bias"].tolist() == [0, 3, 1]
    assert adapted["roi_heads.box_predictor.cls_score.weight"][:, 2].tolist() == [0, 3, 1]
    assert adapted["roi_heads.box_predictor.bbox_pred.bias"].tolist() == [0, 1, 2, 3, 12, 13, 14, 15, 4, 5, 6, 7]
    assert adapted["roi_heads.box_predictor.bbox_pred.weight"].shape == (12, 3)
    assert adapted["roi_heads.mask_predictor.mask_fcn_logits.weight"].flatten().tolist() == [0, 0, 3, 3, 1, 1]
    assert adapted["roi_heads.mask_predictor.mask_fcn_logits.bias"].tolist() == [0, 3, 1]
    assert adapt_predictor_classes(state, [0, 2, 2])["roi_heads.box_predictor.cls_score.bias"].tolist() == [0, 2, 2], \
        "one old class may seed two new ones"
    for bad in ([1, 2], [0, 2, 0], [0, 4], []):
        with pytest.raises(ValueError, match="class_indices"):
            adapt_predictor_classes(state, bad)
    with pytest.raises(ValueError, match="lacks"):
        adapt_predictor_classes({"x": torch.zeros(1)}, [0])


def test_adapted_checkpoint_predicts_the_selected_classes():
    torch.manual_seed(0)
    heads = {"representation_size": 16, "mask_layers": (8,), "fpn_channels": 8}
    with torch.device("meta"):
        skeleton = MaskRCNN(3, width=0.25, **heads)
    source = MaskRCNN(5, width=0.25, **heads)
    target = skeleton.to_empty(device="cpu")
    target.load_state_dict(adapt_predictor_classes(source.state_dict(), [0, 4, 2]), strict=True)
    x = torch.randn(6, 16)
    logits, deltas = target.roi_heads.box_predictor(x)
    source_logits, source_deltas = source.roi_heads.box_predictor(x)
    torch.testing.assert_close(logits, source_logits[:, [0, 4, 2]])
    torch.testing.assert_close(deltas.view(6, 3, 4), source_deltas.view(6, 5, 4)[:, [0, 4, 2]])
    masks = torch.randn(2, 8, 14, 14)
    torch.testing.assert_close(
        target.roi_heads.mask_predictor(masks), source.roi_heads.mask_predictor(masks)[:, [0, 4, 2]]
    )


def test_batch_images_pads_to_multiples_of_32():
    a, b = torch.ones(3, 33, 40), torch.full((3, 20, 70), 2.0)
    batch, sizes = batch_images([a, b])
    assert batch.shape == (2, 3, 64, 96) and sizes == [(33, 40), (20, 70)]
    assert torch.equal(batch[0, :, :33, :40], a) and batch[0].sum() == a.sum()
    assert torch.equal(batch[1, :, :20, :70], b) and batch[1].sum() == b.sum()
    with pytest.raises(ValueError, match=r"\(3, h, w\)"):
        batch_images([torch.zeros(1, 8, 8)])


def test_invalid_inputs_raise_value_errors():
    torch.manual_seed(0)
    model = MaskRCNN(NUM_CLASSES, **SMALL).eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 100, 128), [(100, 128)])
    with pytest.raises(ValueError, match=r"one \(h, w\)"):
        model(torch.zeros(2, 3, 64, 64), [(64, 64)])
    with pytest.raises(ValueError, match=r"one \(h, w\)"):
        model(torch.zeros(1, 3, 64, 64), [(65, 64)])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 1, 64, 64), [(64, 64)])
    with pytest.raises(ValueError, match="depth"):
        MaskRCNN(depth=34)
    model.train()
    good = {"boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([1]),
            "masks": torch.zeros(1, 64, 64)}
    with pytest.raises(ValueError, match="one target per image"):
        model(torch.zeros(1, 3, 64, 64), [(64, 64)])
    for change, message in (
        ({"boxes": torch.tensor([[5.0, 2.0, 5.0, 40.0]])}, "positive width"),
        ({"labels": torch.tensor([1], dtype=torch.int32)}, "int64"),
        ({"labels": torch.tensor([NUM_CLASSES])}, "labels must be in"),
        ({"masks": torch.zeros(2, 64, 64)}, "masks must be"),
    ):
        with pytest.raises(ValueError, match=message):
            model(torch.zeros(1, 3, 64, 64), [(64, 64)], [{**good, **change}])
    with pytest.raises(ValueError, match="lacks"):
        model(torch.zeros(1, 3, 64, 64), [(64, 64)], [{"boxes": good["boxes"]}])


def test_no_detections_gives_empty_outputs():
    torch.manual_seed(0)
    model = MaskRCNN(NUM_CLASSES, **SMALL, box_score_thresh=1.0).eval()
    with torch.no_grad():
        (detection,) = model(torch.zeros(1, 3, 64, 96), [(60, 90)])
    assert detection["boxes"].shape == (0, 4)
    assert detection["labels"].shape == (0,) and detection["scores"].shape == (0,)
    assert detection["masks"].shape == (0, 1, 60, 90)
