"""A toy recipe for the training-loop tests: semantic segmentation of tiny synthetic scenes with two
convolutions and a BatchNorm (or a GroupNorm, which does not depend on the batch)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.training.data import DataConfig, DataSource, Example, class_index_table, scale_flip_crop
from panoptic_perception.training.engine import OptimizerConfig, ScheduleConfig, TrainConfig
from panoptic_perception.training.recipes.common import image_tensor


class ToyRecipe:
    """Semantic segmentation of tiny synthetic scenes with two convolutions and a BatchNorm."""

    backend = "toy"

    def __init__(self, config: TrainConfig, norm: str = "batch", scale: tuple[float, float] = (0.8, 1.0)) -> None:
        self.config, self.norm, self.scale = config, norm, scale
        self.table = class_index_table(CITYSCAPES)

    def build_model(self) -> nn.Module:
        norm = nn.BatchNorm2d(8) if self.norm == "batch" else nn.GroupNorm(2, 8)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm, nn.ReLU(), nn.Conv2d(8, len(CITYSCAPES), 1))

    def model_config(self) -> dict:
        return {"channels": 8}

    def initialize(self, model, path):  # pragma: no cover - not used here
        raise NotImplementedError

    def example(self, sample, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        example = scale_flip_crop(Example.from_sample(sample), (32, 24), rng, self.scale, True, (0, 0, 0))
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
