"""The shared training loop: schedules, checkpoints, bit-exact resume, logs, EMA (with a toy recipe)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panoptic_perception.backends import read_checkpoint
from panoptic_perception.training.data import DataConfig, DataSource, Example, class_index_table, scale_flip_crop
from panoptic_perception.training.engine import ModelEMA, OptimizerConfig, ScheduleConfig, TrainConfig, train
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.training.recipes.common import image_tensor


class ToyRecipe:
    """Semantic segmentation of tiny synthetic scenes with two convolutions and a BatchNorm."""

    backend = "toy"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.table = class_index_table(CITYSCAPES)

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, len(CITYSCAPES), 1))

    def model_config(self) -> dict:
        return {"channels": 8}

    def initialize(self, model, path):  # pragma: no cover - not used here
        raise NotImplementedError

    def example(self, sample, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        example = scale_flip_crop(Example.from_sample(sample), (32, 24), rng, (0.8, 1.0), True, (0, 0, 0))
        return image_tensor(example.image), torch.from_numpy(self.table[example.semantic].astype(np.int64))

    def collate(self, examples):
        images, labels = zip(*examples)
        return torch.stack(images), torch.stack(labels)

    def losses(self, model, batch):
        images, labels = batch
        loss = F.cross_entropy(model(images), labels, ignore_index=255)
        return {"loss": loss, "cross_entropy": loss.detach()}

    def validate(self, model, samples) -> dict[str, float]:
        correct = total = 0
        for index in range(len(samples)):
            image, labels = self.example(samples[index], np.random.default_rng(0))
            prediction = model(image[None]).argmax(1)[0]
            valid = labels != 255
            correct += int((prediction[valid] == labels[valid]).sum())
            total += int(valid.sum())
        return {"pixel_accuracy": correct / total}

    def score(self, metrics):
        return metrics["pixel_accuracy"]


def toy_config(tmp_path, **changes) -> TrainConfig:
    values = dict(
        backend="toy", output_dir=str(tmp_path / "run"), epochs=3, batch_size=4, seed=1,
        optimizer=OptimizerConfig("sgd", 0.05, momentum=0.9, weight_decay=1e-4),
        schedule=ScheduleConfig("poly", warmup_iterations=2),
        data=DataConfig(train=[DataSource(count=12, width=48, height=32)], val=[DataSource(count=3, first_seed=500, width=48, height=32)]),
    )
    values.update(changes)
    return TrainConfig(**values)


def test_schedules_by_hand():
    poly = ScheduleConfig("poly", power=0.9)
    assert poly.factor(0, 0, 100, 10) == 1.0 and poly.factor(50, 5, 100, 10) == pytest.approx(0.5 ** 0.9)
    cosine = ScheduleConfig("cosine", final_factor=0.1)
    assert cosine.factor(50, 0, 100, 10) == pytest.approx(0.1 + 0.9 * 0.5) and cosine.factor(100, 0, 100, 10) == pytest.approx(0.1)
    linear = ScheduleConfig("linear", final_factor=0.0, per="epoch")
    assert linear.factor(999, 5, 100, 10) == pytest.approx(0.5), "per epoch: the iteration does not matter"
    warm = ScheduleConfig("constant", warmup_iterations=10, warmup_start_factor=0.1)
    assert warm.factor(0, 0, 100, 1) == pytest.approx(0.1) and warm.factor(5, 0, 100, 1) == pytest.approx(0.55)
    assert warm.factor(10, 0, 100, 1) == 1.0
    with pytest.raises(ValueError, match="schedule.name"):
        ScheduleConfig("step")


def test_training_lowers_the_loss_and_writes_checkpoints_and_logs(tmp_path):
    config = toy_config(tmp_path)
    summary = train(config, ToyRecipe(config), progress=False)
    history = summary["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    run = tmp_path / "run"
    assert json.loads((run / "history.json").read_text()) == history
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "epoch" and "val_pixel_accuracy" in header and "train_cross_entropy" in header
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = read_checkpoint(run / "best.pth")
    assert best.backend == "toy" and best.config == {"channels": 8}
    scores = [r["val_pixel_accuracy"] for r in history]
    assert best.metadata["validation"]["pixel_accuracy"] == max(scores)


class Interrupt(Exception):
    pass


def test_resume_continues_bit_for_bit(tmp_path):
    straight = toy_config(tmp_path / "a")
    train(straight, ToyRecipe(straight), progress=False)

    interrupted = toy_config(tmp_path / "b")

    def stop_after_first_epoch(record):
        if record["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(interrupted, ToyRecipe(interrupted), progress=False, on_epoch=stop_after_first_epoch)
    torch.manual_seed(12345)  # whatever happened to the global RNG in between must not matter
    train(interrupted, ToyRecipe(interrupted), resume=True, progress=False)

    a = torch.load(tmp_path / "a" / "run" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "run" / "last.pth", weights_only=True)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_ema_follows_the_weights_with_a_warm_up():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    decay = 0.9 * (1 - math.exp(-1 / 2000))
    assert ema.model.weight[0].tolist() == pytest.approx([1 - decay, 1 - decay])


def test_training_with_ema_saves_the_averaged_weights(tmp_path):
    config = toy_config(tmp_path, epochs=1, ema_decay=0.5)
    train(config, ToyRecipe(config), progress=False)
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    best = read_checkpoint(tmp_path / "run" / "best.pth").state_dict
    assert state["ema"]["updates"] == 3
    assert torch.equal(best["0.weight"], state["ema"]["model"]["0.weight"])
    assert not torch.equal(best["0.weight"], state["model"]["0.weight"])


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="optimizer.name"):
        OptimizerConfig("rmsprop")
    with pytest.raises(ValueError, match="ema_decay"):
        toy_config(tmp_path, ema_decay=1.5)
