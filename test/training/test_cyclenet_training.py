"""The cyclenet recipe (§4.1): training examples, the main + 0.4 x auxiliary cross-entropy, initialisation,
validation through the backend, and the bundled variant's training config."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from panoptic_perception.core.preprocess import IMAGENET_MEAN, IMAGENET_MEAN_BGR, IMAGENET_STD
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.data.sample import Sample
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.nn.resnet import resnet101
from panoptic_perception.training.config import from_dict
from panoptic_perception.training.data import IGNORE_INDEX, Example, class_index_table, scale_flip_crop
from panoptic_perception.training.engine import TrainConfig
from panoptic_perception.training.recipes.cyclenet import CycleNetRecipe

SMALL = dict(width=0.125, rates=[1, 2, 3], aspp_bottleneck=16, aspp_growth=8, high_channels=16, low_channels=8,
             decoder_channels=16, aux_channels=8, input_width=128, input_height=72)
CONFIG = Path(__file__).resolve().parents[2] / "panoptic_perception" / "training" / "configs" / "cyclenet_synthetic.yaml"
CLASS_INDEX = class_index_table(CITYSCAPES)


def recipe(model: dict | None = None, **options) -> CycleNetRecipe:
    return CycleNetRecipe(TrainConfig(backend="cyclenet", output_dir="unused", model={**SMALL, **(model or {})},
                                      recipe=options))


def sample(seed: int, size=(160, 90)) -> Sample:
    scene = generate_scene(seed, *size)
    return Sample(f"s{seed}", scene.image, scene.to_result())


def to_bgr(image: torch.Tensor) -> np.ndarray:
    """Undo image_tensor's normalisation: (3, H, W) → (H, W, 3) uint8 BGR."""
    rgb = image * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return (rgb * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()[:, :, ::-1]


def test_a_crop_at_scale_one_is_a_window_of_the_source_with_its_labels():
    source = sample(3)
    example = recipe(scale=[1.0, 1.0], flip=False).example(source, np.random.default_rng(0))
    image, semantic = example["image"], example["semantic"]
    assert image.shape == (3, 72, 128) and semantic.shape == (72, 128) and semantic.dtype == torch.int64
    bgr = to_bgr(image)
    windows = [(x, y) for y in range(90 - 72 + 1) for x in range(160 - 128 + 1)
               if np.array_equal(source.image[y : y + 72, x : x + 128], bgr)]
    assert len(windows) == 1
    x, y = windows[0]
    assert np.array_equal(semantic.numpy(), CLASS_INDEX[source.truth.semantic[y : y + 72, x : x + 128]])


def test_a_crop_option_cuts_windows_smaller_than_the_input_as_the_paper_trains_on_crops():
    source = sample(3)
    example = recipe(scale=[1.0, 1.0], flip=False, crop=[48, 32]).example(source, np.random.default_rng(0))
    assert example["image"].shape == (3, 32, 48) and example["semantic"].shape == (32, 48)
    bgr = to_bgr(example["image"])
    windows = [(x, y) for y in range(90 - 32 + 1) for x in range(160 - 48 + 1)
               if np.array_equal(source.image[y : y + 32, x : x + 48], bgr)]
    assert len(windows) >= 1
    x, y = windows[0]
    assert np.array_equal(example["semantic"].numpy(), CLASS_INDEX[source.truth.semantic[y : y + 32, x : x + 48]])
    with pytest.raises(ValueError, match="crop"):
        recipe(crop=[48, 0])


def test_a_scaled_down_image_is_padded_and_the_padding_ignored():
    source = sample(4)
    example = recipe(scale=[0.5, 0.5], flip=False).example(source, np.random.default_rng(1))
    semantic = example["semantic"].numpy()
    assert (semantic[45:] == IGNORE_INDEX).all() and (semantic[:, 80:] == IGNORE_INDEX).all()
    scaled = cv2.resize(source.truth.semantic, (80, 45), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(semantic[:45, :80], CLASS_INDEX[scaled])
    assert example["image"][:, 45:].abs().max() < 0.03, "padding is the mean colour: zero after normalisation"


def test_flips_and_scales_are_drawn_within_the_options():
    source = sample(5, (128, 72))  # rendered at the network input size, as the synthetic config does
    truth = CLASS_INDEX[source.truth.semantic]
    mirrored = recipe(scale=[1.0, 1.0]).example
    kinds = {("plain" if np.array_equal(e, truth) else "mirrored" if np.array_equal(e, truth[:, ::-1]) else "other")
             for e in (mirrored(source, np.random.default_rng(seed))["semantic"].numpy() for seed in range(12))}
    assert kinds == {"plain", "mirrored"}
    padded = []
    for seed in range(12):  # the paper's range [0.75, 2.0]: at least 75 % of each side is image
        valid = recipe().example(source, np.random.default_rng(seed))["semantic"].numpy() != IGNORE_INDEX
        rows, cols = valid.any(1).sum(), valid.any(0).sum()
        assert rows >= 54 and cols >= 96, (seed, rows, cols)
        padded.append(rows < 72)
    assert any(padded) and not all(padded), "scales below and above 1 both occur"


def test_scenes_rendered_at_the_input_size_augment_exactly_as_the_shared_scale_flip_crop():
    source = sample(6, (128, 72))
    for seed in range(4):
        ours = recipe().example(source, np.random.default_rng(seed))
        shared = scale_flip_crop(Example.from_sample(source), (128, 72), np.random.default_rng(seed), (0.75, 2.0), True,
                                 IMAGENET_MEAN_BGR)
        expected = CLASS_INDEX[shared.semantic]
        expected[~shared.valid] = IGNORE_INDEX
        assert np.array_equal(ours["semantic"].numpy(), expected)
        assert np.array_equal(to_bgr(ours["image"]), shared.image)


def batch(r: CycleNetRecipe, seeds=(1, 2)) -> dict:
    return r.collate([r.example(sample(s), np.random.default_rng(s)) for s in seeds])


def test_the_loss_is_main_plus_weighted_auxiliary_cross_entropy():
    torch.manual_seed(0)
    r = recipe(scale=[1.0, 1.0])
    model = r.build_model().train()
    data = batch(r)
    assert data["image"].shape == (2, 3, 72, 128) and data["semantic"].shape == (2, 72, 128)
    captured = {}
    model.aux_head.register_forward_hook(lambda module, inputs, output: captured.update(aux=output))
    torch.manual_seed(1)  # the same dropout masks in both calls
    losses = r.losses(model, data)
    aux = F.interpolate(captured["aux"], size=(72, 128), mode="bilinear", align_corners=False)
    assert torch.allclose(losses["loss_aux"], F.cross_entropy(aux, data["semantic"], ignore_index=IGNORE_INDEX))
    assert torch.allclose(losses["loss"], losses["loss_semantic"] + 0.4 * losses["loss_aux"])
    torch.manual_seed(1)
    unweighted = recipe(scale=[1.0, 1.0], aux_loss_weight=1.0).losses(model, data)
    assert torch.allclose(unweighted["loss"] - losses["loss"], 0.6 * losses["loss_aux"], atol=1e-5)


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    r = recipe(dict(input_width=64, input_height=40), flip=False, scale=[1.0, 1.0])
    model = r.build_model().train()
    data = batch(r)
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    history = []
    for _ in range(5):
        torch.manual_seed(1)  # the same dropout masks each step: only the weights change
        losses = r.losses(model, data)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(float(losses["loss"].detach()))
    assert set(losses) == {"loss", "loss_semantic", "loss_aux"}
    assert history[-1] < 0.8 * history[0] and all(b < a for a, b in zip(history, history[1:])), history


def test_initialisation_loads_imagenet_resnets_into_the_backbone(tmp_path):
    r = recipe()
    model = r.build_model()
    imagenet = resnet101(width=0.125, num_classes=1000).state_dict()
    torch.save(imagenet, tmp_path / "imagenet.pth")
    report = r.initialize(model, str(tmp_path / "imagenet.pth"))
    assert report["skipped"] == ["fc.weight", "fc.bias"]
    assert len(report["loaded"]) == len(imagenet) - 2 and all(k.startswith("backbone.") for k in report["loaded"])
    assert torch.equal(model.state_dict()["backbone.layer3.22.conv2.weight"], imagenet["layer3.22.conv2.weight"])
    assert not [k for k in report["missing"] if k.startswith("backbone.")]


def test_validation_runs_the_backend_and_scores_miou():
    torch.manual_seed(0)
    r = recipe()
    metrics = r.validate(r.build_model().eval(), [sample(7, (192, 108)), sample(8, (192, 108))])
    assert {"miou", "pixel_accuracy", "mean_accuracy"} <= set(metrics)
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert r.score(metrics) == metrics["miou"]
    assert "iou_road" in metrics and not any(k == "iou_train" for k in metrics), "present classes only"


def test_the_synthetic_training_config_builds_the_recipe():
    config = from_dict(TrainConfig, yaml.safe_load(CONFIG.read_text()), f"{CONFIG.name}: ")
    assert config.backend == "cyclenet"
    r = CycleNetRecipe(config)
    assert r.options.aux_loss_weight == 0.4 and r.options.scale == (0.75, 2.0)
    assert config.optimizer.name == "sgd" and config.optimizer.momentum == 0.9 and config.optimizer.weight_decay == 1e-4
    assert config.schedule.name == "poly" and config.schedule.power == 0.9
    for source in config.data.train:  # scales relative to the source: render at the network input size
        assert (source.width, source.height) == r.size
    with pytest.raises(ValueError, match="scale"):
        recipe(scale=[2.0, 1.0])
