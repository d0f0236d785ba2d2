"""The cross cooperative recipe: crops, Eq. 1's two cross-entropies, training steps, initialisation,
validation through the backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.data.sample import Sample
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.nn.resnet import resnet101
from panoptic_perception.nn.xception import xception65
from panoptic_perception.training.data import IGNORE_INDEX, class_index_table
from panoptic_perception.training.engine import TrainConfig
from panoptic_perception.training.recipes.cross_cooperative import CrossCooperativeRecipe, CrossCooperativeTrainOptions

SMALL = dict(top_width=0.125, bottom_width=0.125, head_channels=16, reduced_channels=8, input_width=96, input_height=64)


def recipe(**options) -> CrossCooperativeRecipe:
    config = TrainConfig(backend="cross_cooperative", output_dir="unused", model=SMALL, recipe=options)
    return CrossCooperativeRecipe(config)


def sample(seed: int, size=(96, 64)) -> Sample:
    scene = generate_scene(seed, *size)
    return Sample(f"s{seed}", scene.image, scene.to_result())


def test_defaults_are_the_papers_crop():
    options = CrossCooperativeTrainOptions()
    assert options.crop == (768, 768) and options.scale == (1.0, 1.0) and not options.flip
    with pytest.raises(ValueError, match="scale"):
        CrossCooperativeTrainOptions(scale=(1.5, 1.0))


def test_a_crop_is_a_window_of_the_image_and_its_labels():
    r = recipe(crop=[48, 32])
    source = sample(3)
    example = r.example(source, np.random.default_rng(0))
    image, semantic = example["image"], example["semantic"]
    assert image.shape == (3, 32, 48) and semantic.shape == (32, 48) and semantic.dtype == torch.int64
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    rgb = torch.from_numpy(source.image[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    labels = torch.from_numpy(class_index_table(CITYSCAPES)[source.truth.semantic].astype(np.int64))
    windows = [(y, x) for y in range(64 - 32 + 1) for x in range(96 - 48 + 1)
               if torch.allclose(rgb[:, y : y + 32, x : x + 48], image)]
    assert len(windows) == 1, "the image is a window of the source (no rescaling at scale 1)"
    y, x = windows[0]
    assert torch.equal(semantic, labels[y : y + 32, x : x + 48]), "labels are cut from the same window"
    offsets = {tuple(r.example(source, np.random.default_rng(seed))["image"][:, 0, 0].tolist()) for seed in range(6)}
    assert len(offsets) > 1, "the window is random"


def test_a_crop_larger_than_the_image_is_padded_and_ignored():
    example = recipe(crop=[128, 80]).example(sample(2), np.random.default_rng(0))
    assert example["image"].shape == (3, 80, 128)
    assert (example["semantic"][64:] == IGNORE_INDEX).all() and (example["semantic"][:, 96:] == IGNORE_INDEX).all()
    assert (example["semantic"][:64, :96] != IGNORE_INDEX).all(), "synthetic scenes label every pixel"


def test_the_loss_is_the_sum_of_both_networks_cross_entropies():
    r = recipe(crop=[64, 64])
    torch.manual_seed(0)
    model = r.build_model().eval()  # eval: no dropout, so a second forward pass gives the same logits
    batch = r.collate([r.example(sample(s), np.random.default_rng(s)) for s in (1, 2)])
    batch["semantic"][:, :8] = IGNORE_INDEX
    with torch.no_grad():
        losses, logits = r.losses(model, batch), model(batch["image"])
    assert set(losses) == {"loss", "loss_top", "loss_bottom"}
    for name in ("top", "bottom"):
        expected = F.cross_entropy(getattr(logits, name), batch["semantic"], ignore_index=IGNORE_INDEX)
        torch.testing.assert_close(losses[f"loss_{name}"], expected)
    torch.testing.assert_close(losses["loss"], losses["loss_top"] + losses["loss_bottom"])
    assert losses["loss_top"] != losses["loss_bottom"]


def test_a_few_steps_lower_both_losses():
    r = recipe(crop=[64, 64])
    torch.manual_seed(0)
    model = r.build_model().train()
    batch = r.collate([r.example(sample(s), np.random.default_rng(s)) for s in (1, 2, 3)])
    optimizer = torch.optim.SGD(model.parameters(), 0.035, momentum=0.9)  # the paper's Cityscapes rate
    history = []
    for _ in range(8):
        losses = r.losses(model, batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    for name in ("loss", "loss_top", "loss_bottom"):
        assert history[-1][name] < 0.8 * history[0][name], [h[name] for h in history]


def test_initialisation_sends_imagenet_backbones_to_their_networks(tmp_path):
    r = recipe()
    model = r.build_model()
    torch.manual_seed(0)
    xception = xception65(width=0.125, num_classes=1000).state_dict()
    resnet = resnet101(width=0.125, num_classes=1000).state_dict()
    torch.save({**xception, **resnet}, tmp_path / "imagenet.pth")
    report = r.initialize(model, str(tmp_path / "imagenet.pth"))
    assert sorted(report["skipped"]) == ["fc.bias", "fc.weight", "head.fc.bias", "head.fc.weight"]
    state = model.state_dict()
    name = "blocks.7.stack.conv2.conv_dw.weight"
    assert torch.equal(state[f"top_backbone.{name}"], xception[name])
    assert torch.equal(state["bottom_backbone.layer3.22.conv2.weight"], resnet["layer3.22.conv2.weight"])
    assert not [k for k in report["missing"] if "backbone." in k], "both backbones loaded entirely"

    torch.save(model.state_dict(), tmp_path / "own.pth")
    other = recipe().build_model()
    assert not recipe().initialize(other, str(tmp_path / "own.pth"))["missing"]


def test_validation_reports_the_ensemble_and_both_networks():
    r = recipe()
    torch.manual_seed(0)
    model = r.build_model().eval()
    samples = [sample(s, (120, 80)) for s in (5, 6)]
    metrics = r.validate(model, samples)
    assert set(metrics) == {"miou", "miou_top", "miou_bottom", "pixel_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert r.score(metrics) == metrics["miou"]
