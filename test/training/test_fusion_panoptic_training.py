"""The fusion-panoptic recipe: training examples, the multi-task loss, initialisation from other checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panoptic_perception.backends.rcnn_weights import seed_rows
from panoptic_perception.cli import main
from panoptic_perception.data.sample import Sample
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.models.fusion_panoptic import THING_IDS
from panoptic_perception.nn.mask_rcnn import MaskRCNN
from panoptic_perception.nn.resnet import resnet50
from panoptic_perception.training.data import IGNORE_INDEX
from panoptic_perception.training.engine import TrainConfig
from panoptic_perception.training.recipes.fusion_panoptic import FusionPanopticRecipe

SMALL = dict(width=0.25, norm="batch_norm", fpn_channels=32, representation_size=64, mask_channels=32,
             semantic_channels=32, group_norm_groups=8, input_width=256, input_height=160)


def recipe(**options) -> FusionPanopticRecipe:
    return FusionPanopticRecipe(TrainConfig(backend="fusion_panoptic", output_dir="unused", model=SMALL, recipe=options))


def sample(seed: int, size=(320, 180)) -> Sample:
    scene = generate_scene(seed, *size)
    return Sample(f"s{seed}", scene.image, scene.to_result())


def test_examples_carry_consistent_targets():
    r = recipe(scale=[0.8, 0.8], flip=False)
    example = r.example(sample(3), np.random.default_rng(0))
    image, semantic, target = example["image"], example["semantic"], example["target"]
    assert image.shape == (3, 160, 256) and semantic.shape == (160, 256)
    h, w = example["image_size"]
    assert (h, w) == (115, 205), "fitted (0.889) then scaled by 0.8, top-left"
    assert (semantic[h:] == IGNORE_INDEX).all() and (semantic[:, w:] == IGNORE_INDEX).all()
    assert abs(float(image[:, h:].mean())) < 0.02, "padding is the mean colour: zero after normalisation"
    boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
    assert len(boxes) == len(labels) == len(masks) > 0 and labels.min() >= 1 and labels.max() <= len(THING_IDS)
    for box, mask in zip(boxes, masks):  # every box is its mask's tight box
        rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
        assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def test_a_few_steps_lower_the_multi_task_loss():
    torch.manual_seed(0)
    r = recipe(flip=False, scale=[1.0, 1.0])
    model = r.build_model().train()
    batch = r.collate([r.example(sample(s), np.random.default_rng(s)) for s in (1, 2)])
    optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
    history = []
    for _ in range(8):
        torch.manual_seed(1)  # the same proposal sampling each step: only the weights change
        losses = r.losses(model, batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(float(losses["loss"].detach()))
    assert set(losses) == {"loss", "loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                           "loss_mask", "loss_semantic"}
    assert history[-1] < 0.8 * history[0], history


def test_initialisation_maps_coco_classes_and_loads_imagenet_resnets(tmp_path):
    r = recipe()
    model = r.build_model()
    torch.manual_seed(0)
    coco = MaskRCNN(91, width=0.25, norm_layer=torch.nn.BatchNorm2d, fpn_channels=32, representation_size=64,
                    mask_layers=(32,) * 4).state_dict()
    torch.save(coco, tmp_path / "coco.pth")
    report = r.initialize(model, str(tmp_path / "coco.pth"))
    loaded = model.state_dict()
    assert not [k for k in report["missing"] if not k.startswith("semantic_head.")], "all of Mask R-CNN loaded"
    bias = coco["roi_heads.box_predictor.cls_score.bias"]
    # background, person, rider (COCO has none: person), car, truck, bus, train, motorcycle, bicycle
    assert seed_rows("coco91") == (0, 1, 1, 3, 8, 6, 7, 4, 2)
    assert torch.equal(loaded["roi_heads.box_predictor.cls_score.bias"], bias[list(seed_rows("coco91"))])
    assert torch.equal(loaded["backbone.body.layer3.0.conv1.weight"], coco["backbone.body.layer3.0.conv1.weight"])

    # The same weights converted by `panoptic-perception convert-weights` (the backend's checkpoint format) map alike.
    assert main(["-q", "convert-weights", str(tmp_path / "coco.pth"), str(tmp_path / "converted.pth")]) == 0
    converted = r.build_model()
    r.initialize(converted, str(tmp_path / "converted.pth"))
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in loaded.items() if not k.startswith("semantic_head."))

    imagenet = resnet50(width=0.25, num_classes=1000).state_dict()
    torch.save(imagenet, tmp_path / "imagenet.pth")
    report = recipe().initialize(model, str(tmp_path / "imagenet.pth"))
    assert "backbone.body.layer4.2.conv3.weight" in report["loaded"] and report["skipped"] == ["fc.weight", "fc.bias"]
    assert torch.equal(model.state_dict()["backbone.body.conv1.weight"], imagenet["conv1.weight"])


def test_the_recipe_trains_the_semantic_head_and_the_cityscapes_things_only():
    for option in ({"semantic_head": False}, {"detector_classes": "coco91"}):
        with pytest.raises(ValueError, match="semantic_head and detector_classes must keep their defaults"):
            FusionPanopticRecipe(TrainConfig(backend="fusion_panoptic", output_dir="unused", model={**SMALL, **option}))


def test_initialisation_from_a_detectron2_pkl_maps_its_coco_rows_and_names_its_conventions(tmp_path, caplog):
    from support import detectron2_model, write_detectron2_pkl

    d2 = detectron2_model()
    path = write_detectron2_pkl(tmp_path / "model_final.pkl", d2)
    r = recipe()
    model = r.build_model()
    with caplog.at_level("WARNING"):
        report = r.initialize(model, path)
    assert "backbone.body.layer3.0.conv1.weight" in report["loaded"]
    loaded = model.state_dict()
    assert torch.equal(loaded["backbone.body.layer3.0.conv1.weight"], d2["backbone.bottom_up.res4.0.conv1.weight"])
    bias = d2["roi_heads.box_predictor.cls_score.bias"]
    background_first = torch.cat((bias[-1:], bias[:-1]))
    assert torch.equal(loaded["roi_heads.box_predictor.cls_score.bias"], background_first[list(seed_rows("coco80"))])
    assert seed_rows("coco80") == (0, 1, 1, 3, 8, 6, 7, 4, 2)  # person, person, car, truck, bus, train, motorcycle, bicycle
    assert "stride_in_1x1=True, roi_aligned=True, roi_sampling_ratio=0, round_anchors=False" in caplog.text
