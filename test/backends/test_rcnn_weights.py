"""Other frameworks' Mask R-CNN checkpoints through ``weights``: torchvision's (against torchvision's own
forward pass, test/oracles.py) and Detectron2's ``.pkl`` (synthetic files with its names and shapes:
nothing can be downloaded here; Detectron2's conventions themselves are tested in test/nn).

The torchvision model is ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)``,
whose state dict has the 53 ``num_batches_tracked`` entries of its ``nn.BatchNorm2d`` layers, with random
but non-trivial weights: BatchNorm statistics and affine terms drawn at random, the FPN outputs scaled to
unit spread on the test image, and class-score rows made orthogonal to the mean box feature (which
otherwise makes one class win every proposal) with biases that favour a few classes, so that its
detections mix classes with a Cityscapes counterpart (person, car, truck) and without (dog, stop sign,
...). No pretrained weights can be downloaded here.
"""

from __future__ import annotations

import copy
import os
import pickle
import re

import numpy as np
import pytest
import torch
from oracles import torchvision_or_skip

from panoptic_perception import create_backend
from panoptic_perception.backends import WeightsError, read_checkpoint
from panoptic_perception.backends.rcnn_weights import COCO_TO_CITYSCAPES
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.semantic_instance_fusion import FusionConfig, InstanceSegmentation, fuse
from panoptic_perception.core.preprocess import normalize
from panoptic_perception.core.types import Capability
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.nn.mask_rcnn import MaskRCNN
from support import D2_FC, D2_FPN, D2_MASK, detectron2_model, write_detectron2_pkl

WIDTH, HEIGHT = 320, 256  # the network input: multiples of 64, so no resizing anywhere
FAVOURED = [1, 3, 8, 18]  # person, car, truck (Cityscapes classes) and dog (none; favoured less)


def network_input(image: np.ndarray) -> torch.Tensor:
    """The backend's pre-processing of a BGR image already at the network size: RGB, [0, 1], ImageNet mean/std."""
    rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)[None].float() / 255
    return normalize(rgb)


def reference_detections(model, images: torch.Tensor, pasted: bool) -> dict[str, torch.Tensor]:
    """torchvision's detections for one image without its transform (the batch is already normalised and
    at the network size): masks 28x28, or pasted into the image (``transform.postprocess``)."""
    from torchvision.models.detection.image_list import ImageList

    sizes = [tuple(images.shape[-2:])]
    features = model.backbone(images)
    proposals, _ = model.rpn(ImageList(images, sizes), features)
    detections, _ = model.roi_heads(features, proposals, sizes)
    return model.transform.postprocess(detections, sizes, sizes)[0] if pasted else detections[0]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """(torchvision's model, a street image, the saved state dict's path)."""
    tv = torchvision_or_skip()
    from torchvision.models.detection.image_list import ImageList

    torch.manual_seed(0)
    model = tv.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).eval()
    image = generate_scene(3, WIDTH, HEIGHT).image
    images = network_input(image)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dim() != 1:
                continue
            if name.endswith("running_var") or (name.startswith("backbone.body") and name.endswith("weight")):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
        features = model.backbone(images)
        spread = max(level.std() for name, level in features.items() if name != "pool")
        for block in model.backbone.fpn.layer_blocks:
            block[0].weight /= spread
            block[0].bias /= spread
        features = model.backbone(images)
        proposals, _ = model.rpn(ImageList(images, [(HEIGHT, WIDTH)]), features)
        boxes = model.roi_heads.box_head(model.roi_heads.box_roi_pool(features, proposals, [(HEIGHT, WIDTH)]))
        mean = boxes.mean(0)
        classifier = model.roi_heads.box_predictor.cls_score
        rows = torch.randn(classifier.weight.shape, generator=generator)
        rows -= (rows @ mean)[:, None] * mean / mean.dot(mean)
        classifier.weight.copy_(rows * 3 / (boxes @ rows.T).std())
        classifier.bias.fill_(-3.0)
        classifier.bias[0] = 0.0
        classifier.bias[FAVOURED] = torch.tensor([3.0, 3.0, 3.0, 2.0])
    path = tmp_path_factory.mktemp("coco") / "maskrcnn_resnet50_fpn.pth"
    torch.save(model.state_dict(), path)
    return model, image, path


def test_torchvision_coco_state_dict_loads_and_detects_as_torchvision_does(coco):
    """In float64 (so that no tie between proposals can go either way), our network with the loaded weights
    gives torchvision's detections: the same boxes, COCO labels, scores and 28x28 masks."""
    model, image, path = coco
    state = read_checkpoint(path).state_dict
    assert sum(k.endswith("num_batches_tracked") for k in state) == 53 and len(state) == 360
    backend = create_backend("fusion_panoptic", str(path), fast=False, input_size=(WIDTH, HEIGHT))
    config = backend.config
    assert (config.detector_classes, config.semantic_head, config.batch_norm_eps) == ("coco91", False, 1e-5)
    assert (config.depth, config.width, config.fpn_channels, config.representation_size) == (50, 1.0, 256, 1024)
    assert backend.network.semantic_head is None
    assert backend.capabilities == {Capability.DETECTION, Capability.PANOPTIC}

    ours, reference = copy.deepcopy(backend.network).double(), copy.deepcopy(model).double()
    # Fewer proposals and detections than the defaults (1000, 100) keep the heads' cost down; same on both.
    ours.rpn.post_nms_top_n["test"] = reference.rpn._post_nms_top_n["testing"] = 300
    ours.roi_heads.detections_per_img = reference.roi_heads.detections_per_img = 30
    images = network_input(image).double()
    with torch.no_grad():
        semantic, (actual,) = ours(images, [(HEIGHT, WIDTH)])
        expected = reference_detections(reference, images, pasted=False)
    assert semantic is None
    assert len(actual["boxes"]) == 30 and set(FAVOURED) & set(actual["labels"].tolist())
    assert set(actual["labels"].tolist()) - set(COCO_TO_CITYSCAPES), "classes without a Cityscapes counterpart too"
    torch.testing.assert_close(actual["boxes"], expected["boxes"], rtol=0, atol=1e-9)
    torch.testing.assert_close(actual["scores"], expected["scores"], rtol=1e-10, atol=0)
    assert torch.equal(actual["labels"], expected["labels"])
    torch.testing.assert_close(actual["masks"], expected["masks"], rtol=0, atol=1e-10)


def test_the_backend_publishes_the_cityscapes_classes_with_their_instance_masks(coco):
    """As a user runs it (fast path, float32): COCO detections of classes with a Cityscapes counterpart, their
    masks placed by score on an all-void image; everything else dropped, no semantic map."""
    model, image, path = coco
    backend = create_backend("fusion_panoptic", str(path), input_size=(WIDTH, HEIGHT))
    backend.set_thresholds(score=0.5, max_detections=30)
    result = backend(image)
    reference = copy.deepcopy(model)
    reference.roi_heads.detections_per_img = 30
    with torch.no_grad():
        expected = reference_detections(reference, network_input(image), pasted=True)
    labels = expected["labels"].numpy()
    cityscapes = np.array([COCO_TO_CITYSCAPES.get(int(label), 0) for label in labels])
    kept = (expected["scores"].numpy() >= 0.5) & (cityscapes > 0)
    assert kept.sum() >= 8 and ((expected["scores"].numpy() >= 0.5) & (cityscapes == 0)).any()
    wanted = fuse(np.zeros((HEIGHT, WIDTH), np.uint8),
                  InstanceSegmentation(expected["masks"][kept, 0].numpy() > 0.5, expected["scores"][kept], cityscapes[kept]),
                  CITYSCAPES, FusionConfig(method="kirillov", score_threshold=0.5))

    assert result.semantic is None
    assert [(s.category_id, s.is_thing) for s in result.segments] == [(s.category_id, True) for s in wanted.segments]
    np.testing.assert_allclose([s.score for s in result.segments], [s.score for s in wanted.segments], rtol=1e-4)
    assert set(result.detections.class_ids.tolist()) <= set(COCO_TO_CITYSCAPES.values())
    assert CITYSCAPES.id_of("rider") not in result.detections.class_ids
    assert (result.panoptic == 0).mean() > 0.3  # no stuff: void where no instance is
    # float32 with folded BatchNorm against torchvision's BatchNorm: a mask pixel at 0.5 may flip
    assert (result.panoptic != wanted.panoptic).mean() < 1e-3


def test_batchnorm_eps_follows_torchvisions_coco_weights_and_the_option_overrides_it(coco, tmp_path):
    """torchvision's COCO_V1 weights come from frozen BatchNorm (no num_batches_tracked) and run with eps 0."""
    _, _, path = coco
    frozen = {k: v for k, v in read_checkpoint(path).state_dict.items() if not k.endswith("num_batches_tracked")}
    torch.save(frozen, tmp_path / "coco_v1_like.pth")
    backend = create_backend("fusion_panoptic", str(tmp_path / "coco_v1_like.pth"), fast=False)
    assert backend.config.batch_norm_eps == 0.0 and backend.network.backbone.body.bn1.eps == 0.0
    backend = create_backend("fusion_panoptic", str(tmp_path / "coco_v1_like.pth"), fast=False, batch_norm_eps=1e-5)
    assert backend.network.backbone.body.layer4[2].bn3.eps == 1e-5


def test_a_torchvision_mask_rcnn_of_other_classes_is_refused_saying_what_loads(tmp_path):
    state = MaskRCNN(5, width=0.25, fpn_channels=32, representation_size=64, mask_layers=(16,) * 4).state_dict()
    torch.save(state, tmp_path / "five.pth")
    with pytest.raises(WeightsError, match=r"five\.pth is a torchvision Mask R-CNN with 5 classes; fusion_panoptic "
                                           r"takes COCO's 91 .* or its own 9 \(background, then person, rider, .*"
                                           r"adapt_predictor_classes"):
        create_backend("fusion_panoptic", str(tmp_path / "five.pth"))


# -- Detectron2 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pkl protocol 2", "pkl protocol 5", "torch.save"])
def test_a_detectron2_checkpoint_converts_every_tensor_to_its_place(tmp_path, kind):
    """The model zoo's .pkl (protocol 2 names numpy.core, as old files do; 5 numpy._core) or what Detectron2's
    trainer writes with torch.save (``model_final.pth``: the model's state dict under "model")."""
    d2 = detectron2_model()
    if kind == "torch.save":
        path = str(tmp_path / "model_final.pth")
        torch.save({"model": d2, "iteration": 89999}, path)
    else:
        path = write_detectron2_pkl(tmp_path / "model_final.pkl", d2, int(kind[-1]))
    backend = create_backend("fusion_panoptic", path, fast=False, input_size=(192, 128))
    config = backend.config
    assert (config.stride_in_1x1, config.roi_aligned, config.roi_sampling_ratio, config.round_anchors) == (True, True, 0, False)
    assert (config.detector_classes, config.semantic_head, config.depth, config.width) == ("coco80", False, 50, 0.25)
    assert (config.fpn_channels, config.representation_size, config.mask_channels) == (D2_FPN, D2_FC, D2_MASK)
    ours = backend.network.state_dict()
    moved = {  # Detectron2 name -> ours, one of each kind, written out
        "backbone.bottom_up.stem.conv1.norm.running_var": "backbone.body.bn1.running_var",
        "backbone.bottom_up.res2.0.shortcut.weight": "backbone.body.layer1.0.downsample.0.weight",
        "backbone.bottom_up.res2.0.shortcut.norm.bias": "backbone.body.layer1.0.downsample.1.bias",
        "backbone.bottom_up.res3.0.conv1.weight": "backbone.body.layer2.0.conv1.weight",
        "backbone.bottom_up.res4.5.conv2.norm.running_mean": "backbone.body.layer3.5.bn2.running_mean",
        "backbone.bottom_up.res5.2.conv3.norm.weight": "backbone.body.layer4.2.bn3.weight",
        "backbone.fpn_lateral2.weight": "backbone.fpn.inner_blocks.0.0.weight",
        "backbone.fpn_output5.bias": "backbone.fpn.layer_blocks.3.0.bias",
        "proposal_generator.rpn_head.conv.weight": "rpn.head.conv.0.0.weight",
        "proposal_generator.rpn_head.objectness_logits.bias": "rpn.head.cls_logits.bias",
        "proposal_generator.rpn_head.anchor_deltas.weight": "rpn.head.bbox_pred.weight",
        "roi_heads.box_head.fc1.weight": "roi_heads.box_head.fc6.weight",
        "roi_heads.box_head.fc2.bias": "roi_heads.box_head.fc7.bias",
        "roi_heads.mask_head.mask_fcn1.weight": "roi_heads.mask_head.0.0.weight",
        "roi_heads.mask_head.mask_fcn4.bias": "roi_heads.mask_head.3.0.bias",
        "roi_heads.mask_head.deconv.weight": "roi_heads.mask_predictor.conv5_mask.weight",
    }
    for theirs, mine in moved.items():
        assert torch.equal(ours[mine], d2[theirs]), theirs
    # Every other tensor lands unchanged somewhere: all but the first convolution and the predictors.
    changed = {"backbone.bottom_up.stem.conv1.weight", *(f"roi_heads.box_predictor.{p}.{q}" for p in ("cls_score", "bbox_pred")
                                                          for q in ("weight", "bias")),
               "roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias"}
    signatures = sorted((tuple(v.shape), v.sum().item(), v.abs().max().item()) for v in ours.values())
    for name, value in d2.items():
        if name not in changed:
            assert (tuple(value.shape), value.sum().item(), value.abs().max().item()) in signatures, name
    assert len(ours) == len(d2) == 307  # one to one: torchvision's Mask R-CNN has 307 entries
    # The background moves first: the class probabilities are Detectron2's, whose background is last.
    features = torch.randn(5, D2_FC)
    probabilities = torch.softmax(features @ ours["roi_heads.box_predictor.cls_score.weight"].T
                                  + ours["roi_heads.box_predictor.cls_score.bias"], 1)
    theirs = torch.softmax(features @ d2["roi_heads.box_predictor.cls_score.weight"].T + d2["roi_heads.box_predictor.cls_score.bias"], 1)
    torch.testing.assert_close(probabilities, torch.cat((theirs[:, -1:], theirs[:, :-1]), 1))
    assert torch.equal(ours["roi_heads.box_predictor.bbox_pred.weight"][4:], d2["roi_heads.box_predictor.bbox_pred.weight"])
    assert not ours["roi_heads.box_predictor.bbox_pred.bias"][:4].any()
    assert torch.equal(ours["roi_heads.mask_predictor.mask_fcn_logits.weight"][1:], d2["roi_heads.mask_head.predictor.weight"])
    assert ours["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 81
    # The first convolution on the backend's input computes Detectron2's on its own (BGR 0-255 minus its mean).
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), np.uint8)
    bgr = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    detectron2_input = bgr - torch.tensor([103.530, 116.280, 123.675], dtype=torch.float64).view(1, 3, 1, 1)
    expected = torch.nn.functional.conv2d(detectron2_input, d2["backbone.bottom_up.stem.conv1.weight"].double(), stride=2, padding=3)
    actual = torch.nn.functional.conv2d(network_input(image).double(), ours["backbone.body.conv1.weight"].double(), stride=2, padding=3)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4 * expected.abs().max().item())
    backend.set_thresholds(score=0.0)
    result = backend(generate_scene(1, 192, 128).image)  # it runs, and publishes Cityscapes classes only
    assert result.semantic is None and set(result.detections.class_ids.tolist()) <= set(COCO_TO_CITYSCAPES.values())


def test_detectron2_pixel_mean_and_std_in_the_file_are_folded_in_their_channel_order(tmp_path):
    d2 = detectron2_model(classes=8)
    rgb_mean, rgb_std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    path = write_detectron2_pkl(tmp_path / "rgb.pkl", {**d2, "pixel_mean": rgb_mean.view(3, 1, 1),
                                                       "pixel_std": rgb_std.view(3, 1, 1)})
    backend = create_backend("fusion_panoptic", path, fast=False)
    assert backend.config.detector_classes == "cityscapes"  # Detectron2's Cityscapes Mask R-CNN: our 8 things
    image = np.random.default_rng(1).integers(0, 256, (64, 96, 3), np.uint8)
    rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)[None].double()
    detectron2_input = (rgb - rgb_mean.double().view(1, 3, 1, 1)) / rgb_std.double().view(1, 3, 1, 1)
    expected = torch.nn.functional.conv2d(detectron2_input, d2["backbone.bottom_up.stem.conv1.weight"].double(), stride=2, padding=3)
    actual = torch.nn.functional.conv2d(network_input(image).double(),
                                        backend.network.backbone.body.conv1.weight.double(), stride=2, padding=3)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4 * expected.abs().max().item())

    write_detectron2_pkl(tmp_path / "odd.pkl", {**d2, "pixel_mean": torch.tensor([100.0, 100.0, 100.0])})
    with pytest.raises(WeightsError, match=r"pixel_mean \[100\.0, 100\.0, 100\.0\] is not ImageNet's"):
        create_backend("fusion_panoptic", str(tmp_path / "odd.pkl"))


def test_a_pickle_with_other_globals_is_refused_without_running_anything(tmp_path):
    marker = tmp_path / "created_by_the_pickle"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    data = pickle.dumps({"model": {"a": np.zeros(2, np.float32), "b": Payload()}, "__author__": "x"}, protocol=2)
    (tmp_path / "evil.pkl").write_bytes(data)
    with pytest.raises(WeightsError) as error:
        read_checkpoint(tmp_path / "evil.pkl")
    assert str(error.value) == (f"cannot read {tmp_path / 'evil.pkl'}: a pickle that refers to the Python object "
                                f"{os.mkdir.__module__}.mkdir, which is not loaded (only tensors and numpy arrays in "
                                f"plain containers are: torch.save checkpoints, Detectron2 .pkl files)")
    assert not marker.exists()
    pickle.loads(data)  # the payload is live: plain unpickling runs it
    assert marker.is_dir()


@pytest.mark.parametrize("change, message", [
    (lambda d2: {k: v for k, v in d2.items() if "mask_head" not in k}, r"without a mask head \(a Faster R-CNN\?\)"),
    (lambda d2: {**d2, "roi_heads.box_head.0.fc1.weight": torch.zeros(1)},
     r"1 Detectron2 keys outside the standard Mask R-CNN ResNet-FPN layout .*: roi_heads\.box_head\.0\.fc1\.weight$"),
    (lambda d2: {k: v for k, v in d2.items() if not k.startswith("backbone.bottom_up.stem")}, r"without a ResNet R-CNN"),
    (lambda d2: detectron2_model(classes=3), r"a Detectron2 Mask R-CNN with 3 classes; fusion_panoptic takes COCO's 80"),
])
def test_detectron2_checkpoints_outside_the_standard_mask_rcnn_are_refused_in_one_line(tmp_path, change, message):
    path = write_detectron2_pkl(tmp_path / "other.pkl", change(detectron2_model()))
    with pytest.raises(WeightsError, match=message) as error:
        create_backend("fusion_panoptic", path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("change, message", [
    (lambda d2: {k: v for k, v in d2.items() if ".cls_score." not in k},
     r" is not a complete Detectron2 ResNet-FPN Mask R-CNN: it lacks roi_heads\.box_predictor\.cls_score\.weight, "
     r"roi_heads\.box_predictor\.cls_score\.bias"),
    (lambda d2: {k: v for k, v in d2.items() if k != "roi_heads.box_predictor.bbox_pred.bias"},
     r" is not a complete Detectron2 ResNet-FPN Mask R-CNN: it lacks roi_heads\.box_predictor\.bbox_pred\.bias"),
    (lambda d2: {k: v for k, v in d2.items() if k != "roi_heads.mask_head.predictor.bias"},
     r" is not a complete Detectron2 ResNet-FPN Mask R-CNN: it lacks roi_heads\.mask_head\.predictor\.bias"),
    (lambda d2: {**d2, "backbone.bottom_up.stem.conv1.weight": torch.zeros(16)},
     r": backbone\.bottom_up\.stem\.conv1\.weight has shape \(16,\), where a Detectron2 ResNet-FPN Mask R-CNN has "
     r"\(_, 3, _, _\)"),
    (lambda d2: {**d2, "roi_heads.box_predictor.cls_score.weight": torch.tensor(1.0)},
     r": roi_heads\.box_predictor\.cls_score\.weight has shape \(\), where a Detectron2 ResNet-FPN Mask R-CNN has \(_, _\)"),
], ids=["no cls_score", "no bbox_pred.bias", "no mask predictor.bias", "1-D stem", "0-d cls_score"])
def test_detectron2_checkpoints_lacking_or_misshaping_a_converted_tensor_are_refused_naming_it(tmp_path, change, message):
    path = write_detectron2_pkl(tmp_path / "model.pkl", change(detectron2_model()))
    with pytest.raises(WeightsError) as error:
        create_backend("fusion_panoptic", path)
    assert re.fullmatch(re.escape(path) + message, str(error.value))


@pytest.mark.parametrize("change, message", [
    (lambda state: {k: v for k, v in state.items() if ".cls_score." not in k},
     r" is not a complete torchvision ResNet-FPN Mask R-CNN: it lacks roi_heads\.box_predictor\.cls_score\.weight, "
     r"roi_heads\.box_predictor\.cls_score\.bias"),
    (lambda state: {k: v for k, v in state.items() if k in ("roi_heads.box_head.fc6.weight",
                                                            "roi_heads.mask_predictor.mask_fcn_logits.weight")},
     r" is not a complete torchvision ResNet-FPN Mask R-CNN: it lacks backbone\.body\.conv1\.weight, .*"
     r"roi_heads\.box_predictor\.cls_score\.weight, .* \(1 more\)"),
    (lambda state: {**state, "roi_heads.box_predictor.cls_score.weight": torch.tensor(1.0)},
     r": roi_heads\.box_predictor\.cls_score\.weight has shape \(\), where a torchvision ResNet-FPN Mask R-CNN has \(_, _\)"),
], ids=["no cls_score", "only fc6 and mask_fcn_logits", "0-d cls_score"])
def test_torchvision_mask_rcnns_lacking_or_misshaping_a_read_tensor_are_refused_naming_it(tmp_path, change, message):
    state = MaskRCNN(91, width=0.25, fpn_channels=32, representation_size=64, mask_layers=(16,) * 4).state_dict()
    path = str(tmp_path / "maskrcnn.pth")
    torch.save(change(state), path)
    with pytest.raises(WeightsError) as error:
        create_backend("fusion_panoptic", path)
    assert re.fullmatch(re.escape(path) + message, str(error.value))


def test_other_backends_say_what_a_detectron2_file_is_and_who_converts_it(tmp_path):
    path = write_detectron2_pkl(tmp_path / "model_final.pkl", detectron2_model())
    with pytest.raises(WeightsError) as error:
        create_backend("twinlitenet", path)
    assert str(error.value) == f"{path} is a Detectron2 checkpoint, which backend twinlitenet cannot use (fusion_panoptic converts it)"


def test_weights_that_do_not_fit_say_which_other_formats_load(tmp_path):
    """E.g. a torchvision Faster R-CNN: no mask head, so not a Mask R-CNN to convert."""
    state = {k: v for k, v in MaskRCNN(91, width=0.25, fpn_channels=32, representation_size=64,
                                       mask_layers=(16,) * 4).state_dict().items() if "mask" not in k}
    torch.save(state, tmp_path / "faster_rcnn.pth")
    with pytest.raises(WeightsError, match=r"do not fit FusionPanopticNetwork: .* missing keys: .* \(fusion_panoptic "
                                           r"also loads torchvision maskrcnn_resnet50_fpn state dicts and Detectron2 "
                                           r"Mask R-CNN R50/R101-FPN checkpoints, converting them: README, Checkpoint "
                                           r"formats\)$"):
        create_backend("fusion_panoptic", str(tmp_path / "faster_rcnn.pth"))
