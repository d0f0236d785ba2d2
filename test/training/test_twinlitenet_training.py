"""The twinlitenet recipe (§III-B, §III-C): training examples, focal + Tversky per head, the official
validation metrics, BDD100K samples, a run of the engine from a YAML config whose best.pth the backend
loads, and the bundled weights' training config."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from panoptic_perception.backends import create_backend, read_checkpoint
from panoptic_perception.data.bdd100k import BDD100KDataset
from panoptic_perception.data.sample import Sample
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.training import train_from_config
from panoptic_perception.training.config import from_dict
from panoptic_perception.training.engine import TrainConfig
from panoptic_perception.training.losses import TwinLiteNetLoss, TwinLiteNetLossWeights, tversky_loss
from panoptic_perception.training.recipes import RECIPES
from panoptic_perception.training.recipes.twinlitenet import TwinLiteNetRecipe

CONFIG = Path(__file__).resolve().parents[2] / "panoptic_perception" / "training" / "configs" / "twinlitenet_synthetic.yaml"
SIZE = (64, 48)


def recipe(batch_size: int = 3, **options) -> TwinLiteNetRecipe:
    return TwinLiteNetRecipe(TrainConfig(backend="twinlitenet", output_dir="unused", batch_size=batch_size,
                                         model={"input_width": SIZE[0], "input_height": SIZE[1]}, recipe=options))


def sample(seed: int, size=SIZE) -> Sample:
    scene = generate_scene(seed, *size)
    return Sample(f"s{seed}", scene.image, scene.to_result())


def test_examples_are_the_backends_input_and_both_masks_mirrored_half_the_time():
    source = sample(3)
    plain = recipe(flip=False).example(source, np.random.default_rng(0))
    rgb = torch.from_numpy(source.image[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(plain["image"], rgb), "RGB in [0, 1], no mean/std"
    assert plain["drivable"].dtype == torch.int64 and plain["drivable"].shape == (48, 64)
    assert np.array_equal(plain["drivable"].numpy(), source.truth.drivable_mask)
    assert np.array_equal(plain["lane"].numpy(), source.truth.lane_mask)
    assert plain["drivable"].any() and plain["lane"].any()
    kinds = set()
    for seed in range(12):
        e = recipe().example(source, np.random.default_rng(seed))
        mirrored = torch.equal(e["image"], rgb.flip(-1))
        assert mirrored or torch.equal(e["image"], rgb)
        for name in ("drivable", "lane"):
            assert torch.equal(e[name], plain[name].flip(-1) if mirrored else plain[name])
        kinds.add(mirrored)
    assert kinds == {True, False}


def test_larger_samples_are_resized_to_the_input_size():
    source = sample(4, (128, 96))
    e = recipe(flip=False).example(source, np.random.default_rng(0))
    assert e["image"].shape == (3, 48, 64)
    expected = cv2.resize(source.truth.lane_mask, SIZE, interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(e["lane"].numpy(), expected)


def test_a_sample_without_masks_is_named():
    with pytest.raises(ValueError, match="s5: twinlitenet trains on drivable-area and lane-line masks"):
        recipe().example(Sample("s5", sample(5).image), np.random.default_rng(0))


def test_the_loss_is_focal_plus_tversky_of_each_head():
    torch.manual_seed(0)
    r = recipe(flip=False)
    model = r.build_model().train()
    batch = r.collate([r.example(sample(s), np.random.default_rng(s)) for s in (1, 2)])
    assert batch["image"].shape == (2, 3, 48, 64) and batch["lane"].shape == (2, 48, 64)
    losses = r.losses(model, batch)
    drivable, lane = model(batch["image"])
    expected = TwinLiteNetLoss()((drivable, lane), batch["drivable"], batch["lane"])
    assert torch.allclose(losses["loss_drivable"], expected["drivable"], atol=1e-5)
    assert torch.allclose(losses["loss_lane"], expected["lane"], atol=1e-5)
    assert torch.allclose(losses["loss"], losses["loss_drivable"] + losses["loss_lane"])
    custom = recipe(loss={"focal_gamma": 0.0, "tversky_alpha": 0.5, "tversky_beta": 0.5})
    assert custom.criterion.weights == TwinLiteNetLossWeights(0.0, 0.5, 0.5)
    focal_at_gamma_0 = F.cross_entropy(drivable, batch["drivable"])
    assert torch.allclose(custom.criterion.head_loss(drivable, batch["drivable"]),
                          focal_at_gamma_0 + tversky_loss(drivable, batch["drivable"], 0.5, 0.5))


def test_a_few_adam_steps_lower_the_loss():
    torch.manual_seed(0)
    r = recipe(flip=False)
    model = r.build_model().train()
    batch = r.collate([r.example(sample(s), np.random.default_rng(s)) for s in (1, 2, 3)])
    optimizer = torch.optim.Adam(model.parameters(), 2e-3, weight_decay=5e-4)
    history = []
    for _ in range(6):
        losses = r.losses(model, batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(float(losses["loss"].detach()))
    assert set(losses) == {"loss", "loss_drivable", "loss_lane"}
    assert history[-1] < 0.9 * history[0] and all(b < a for a, b in zip(history, history[1:])), history


class Predictor(nn.Module):
    """Returns the logits of fixed masks, batch after batch (and records the batch sizes it saw)."""

    def __init__(self, drivable: list[np.ndarray], lane: list[np.ndarray]) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))
        self.drivable, self.lane, self.batches = drivable, lane, []

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, n = sum(self.batches), images.shape[0]
        self.batches.append(n)

        def logits(masks):
            return F.one_hot(torch.from_numpy(np.stack(masks[start:start + n])).long(), 2).permute(0, 3, 1, 2).float()

        return logits(self.drivable), logits(self.lane)


def test_validation_is_the_official_form_in_batches_of_batch_size():
    samples = [sample(seed) for seed in range(10, 15)]
    r = recipe(batch_size=3)
    oracle = Predictor([s.truth.drivable_mask for s in samples], [s.truth.lane_mask for s in samples])
    metrics = r.validate(oracle, samples)
    assert oracle.batches == [3, 2] and metrics["images"] == 5
    assert metrics["drivable_miou"] == 1.0 and metrics["lane_iou"] == 1.0 and r.score(metrics) == 2.0

    zeros = [np.zeros((48, 64), np.uint8)] * 5
    metrics = r.validate(Predictor(zeros, zeros), samples)  # background everywhere: IoU 0 for the positives
    background = [1 - s.truth.drivable_mask.mean() for s in samples]
    per_batch = [np.mean(background[:3]) / 2, np.mean(background[3:]) / 2]  # one confusion matrix per batch
    assert metrics["drivable_miou"] == pytest.approx((3 * per_batch[0] + 2 * per_batch[1]) / 5)
    assert metrics["lane_iou"] == 0.0 and metrics["global_drivable_miou"] == pytest.approx(np.mean(background) / 2)


def test_bdd100k_frames_are_resized_with_their_masks(tmp_path, make_bdd100k_folder):
    root = make_bdd100k_folder(tmp_path, "val", names=("a", "b"), size=(128, 96))
    frames = BDD100KDataset(root, "val")
    r = recipe(batch_size=2, flip=False)
    e = r.example(frames[0], np.random.default_rng(0))
    assert e["image"].shape == (3, 48, 64)
    assert e["drivable"][24:].all() and not e["drivable"][:24].any()
    assert e["lane"].any(0).nonzero().flatten().tolist() == [30], "columns 60-61 of 128 → 30 of 64"
    torch.manual_seed(0)
    assert r.validate(r.build_model().eval(), frames)["images"] == 2


def test_initialisation_loads_a_twinlitenet_checkpoint(tmp_path):
    torch.manual_seed(0)
    r = recipe()
    source = r.build_model()
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "official.pth")
    torch.manual_seed(1)
    model = r.build_model()
    report = r.initialize(model, str(tmp_path / "official.pth"))
    assert report["skipped"] == [] and report["missing"] == []
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in source.state_dict().items())


def test_the_engine_trains_it_from_a_yaml_config_and_the_backend_loads_best_pth(tmp_path):
    config = {
        "backend": "twinlitenet", "output_dir": "ignored", "epochs": 2, "batch_size": 3, "threads": 1,
        "optimizer": {"name": "adam", "learning_rate": 2.0e-3, "weight_decay": 5.0e-4},
        "schedule": {"name": "poly", "power": 1.5, "per": "epoch"},
        "model": {"input_width": 64, "input_height": 48},
        "data": {"train": [{"source": "synthetic", "count": 6, "width": 64, "height": 48}],
                 "val": [{"source": "synthetic", "count": 3, "first_seed": 1000000, "width": 64, "height": 48}]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = train_from_config(path, output_dir=str(tmp_path / "run"), progress=False)
    history = summary["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert [r["lr"] for r in history] == pytest.approx([2e-3, 2e-3 * 0.5 ** 1.5]), "poly per epoch"
    assert {"train_loss", "train_loss_drivable", "train_loss_lane", "val_drivable_miou", "val_lane_iou",
            "val_lane_recall", "val_images"} <= set(history[0])
    checkpoint = read_checkpoint(summary["best_checkpoint"])
    assert checkpoint.backend == "twinlitenet"
    assert checkpoint.config == {"esp_blocks_level2": 2, "esp_blocks_level3": 3, "input_width": 64, "input_height": 48}
    best = max(history, key=lambda r: r["val_drivable_miou"] + r["val_lane_iou"])
    assert checkpoint.metadata["validation"]["drivable_miou"] == best["val_drivable_miou"]
    backend = create_backend("twinlitenet", summary["best_checkpoint"])
    assert backend.input_size == (64, 48)
    assert backend(np.zeros((30, 50, 3), np.uint8)).drivable_mask.shape == (30, 50)


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="multiples of 8"):
        TwinLiteNetRecipe(TrainConfig(backend="twinlitenet", output_dir="x", model={"input_width": 100}))
    with pytest.raises(ValueError, match="unknown TwinLiteNetTrainOptions options: colour"):
        recipe(colour=1)
    with pytest.raises(ValueError, match="unknown TwinLiteNetLossWeights options: gamma"):
        recipe(loss={"gamma": 1.0})
    config = tmp_path / "c.yaml"
    config.write_text("backend: yolopx\noutput_dir: x\n")
    with pytest.raises(ValueError, match="no recipe for backend 'yolopx'; available: .*twinlitenet"):
        train_from_config(config)


def test_the_bundled_weights_training_config_is_the_earlier_trainers_recipe():
    config = from_dict(TrainConfig, yaml.safe_load(CONFIG.read_text()), f"{CONFIG.name}: ")
    assert config.backend == "twinlitenet" and RECIPES["twinlitenet"] is TwinLiteNetRecipe
    r = TwinLiteNetRecipe(config)
    assert r.size == (320, 184) and (config.epochs, config.batch_size, config.seed) == (12, 8, 0)
    assert (config.optimizer.name, config.optimizer.learning_rate, config.optimizer.weight_decay) == ("adam", 2e-3, 5e-4)
    assert config.optimizer.betas == (0.9, 0.999) and config.ema_decay == 0.0 and config.gradient_clip == 0.0
    schedule = config.schedule
    assert (schedule.name, schedule.power, schedule.per, schedule.warmup_iterations) == ("poly", 1.5, "epoch", 0)
    # the earlier trainer's rate at epoch e: 2e-3 * (1 - e / 12) ** 1.5, whatever the iteration
    assert [schedule.factor(e * 200 + 7, e, 2400, 12) for e in range(12)] == pytest.approx(
        [(1 - e / 12) ** 1.5 for e in range(12)])
    assert r.options.flip and r.criterion.weights == TwinLiteNetLossWeights(2.0, 0.7, 0.3)
    [train], [val] = config.data.train, config.data.val
    assert (train.source, train.count, train.first_seed, train.width, train.height) == ("synthetic", 1600, 0, 320, 184)
    assert (val.source, val.count, val.first_seed, val.width, val.height) == ("synthetic", 200, 1_000_000, 320, 184)
    bundled = read_checkpoint(Path(__file__).resolve().parents[2] / "panoptic_perception" / "weights"
                              / "twinlitenet_synthetic.pth")
    assert bundled.config == r.model_config()
    earlier = bundled.metadata["train_config"]  # written by the earlier trainer
    assert (earlier["learning_rate"], earlier["weight_decay"], earlier["lr_power"]) == (2e-3, 5e-4, 1.5)
    assert (earlier["epochs"], earlier["batch_size"], earlier["data"]["train_count"]) == (12, 8, 1600)
