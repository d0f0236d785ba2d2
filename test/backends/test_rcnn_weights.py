"""Other frameworks' Mask R-CNN checkpoints through ``weights``: torchvision's (against torchvision's own
forward pass, test/oracles.py).

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

import numpy as np
import pytest
import torch
from oracles import torchvision_or_skip

from panoptic_perception import create_backend
from panoptic_perception.backends import WeightsError, read_checkpoint
from panoptic_perception.backends.rcnn_weights import COCO_TO_CITYSCAPES
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.panoptic_fusion import FusionConfig, InstanceSegmentation, fuse
from panoptic_perception.core.preprocess import normalize
from panoptic_perception.core.types import Capability
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.nn.mask_rcnn import MaskRCNN

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
