"""Training TwinLiteNet (paper §III-C) on synthetic scenes or a BDD100K folder.

Writes to ``output_dir``: ``last.pth`` (model, optimizer, epoch, history: for resuming) after every
epoch, ``best.pth`` (a backend checkpoint with the architecture config and its validation metrics)
whenever validation improves on ``drivable_miou + lane_iou``, and ``history.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..backends.twinlitenet import TwinLiteNet, TwinLiteNetConfig
from ..backends.weights import WeightsError, save_checkpoint
from ..core.preprocess import prepare_batch
from ..data.bdd100k import BDD100KDrivingMasks
from ..data.synthetic import SyntheticScenes
from ..evaluation.segmentation import DrivingSegmentationMetrics
from .config import TwinLiteNetTrainConfig
from .losses import TwinLiteNetLoss, TwinLiteNetLossWeights

log = logging.getLogger("panoptic_perception.training")

RESUME_FORMAT = "panoptic_perception.training_state/1"


class DrivingMasksDataset(Dataset):
    """Samples with ``image`` (BGR uint8), ``drivable_mask`` and ``lane_mask`` → training tensors.

    Images are resized to ``size`` and normalised exactly as at inference (:func:`prepare_batch`).
    """

    def __init__(self, samples: Sequence, size: tuple[int, int]) -> None:
        self.samples = samples
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image, _ = prepare_batch([sample.image], self.size)
        masks = []
        for mask in (sample.drivable_mask, sample.lane_mask):
            if (mask.shape[1], mask.shape[0]) != self.size:
                raise ValueError(f"label size {mask.shape[1]}x{mask.shape[0]} differs from the input size {self.size}")
            masks.append(torch.from_numpy(mask.astype(np.int64)))
        return image[0], masks[0], masks[1]


def build_datasets(config: TwinLiteNetTrainConfig) -> tuple[Dataset, Dataset]:
    size = (config.input_width, config.input_height)
    data = config.data
    if data.source == "bdd100k":
        return (
            DrivingMasksDataset(BDD100KDrivingMasks(data.root, "train", size), size),
            DrivingMasksDataset(BDD100KDrivingMasks(data.root, "val", size), size),
        )
    # Synthetic scenes are generated once at the training size and kept in memory.
    splits = []
    for count, first_seed, name in (
        (data.train_count, data.train_first_seed, "training"),
        (data.val_count, data.val_first_seed, "validation"),
    ):
        scenes = SyntheticScenes(count, *size, first_seed=first_seed)
        splits.append(DrivingMasksDataset(list(tqdm(scenes, desc=f"generating {name} scenes", leave=False)), size))
    return splits[0], splits[1]


def poly_learning_rate(config: TwinLiteNetTrainConfig, epoch: int) -> float:
    return config.learning_rate * (1 - epoch / config.epochs) ** config.lr_power


@torch.no_grad()
def validate(model: TwinLiteNet, dataset: Dataset, batch_size: int) -> dict[str, float]:
    """Official-form metrics (per-batch confusion, batch-weighted) of argmax predictions."""
    model.eval()
    metrics = DrivingSegmentationMetrics()
    for images, drivable, lane in DataLoader(dataset, batch_size=batch_size):
        drivable_logits, lane_logits = model(images)
        metrics.update(drivable_logits.argmax(1).numpy(), drivable.numpy(), lane_logits.argmax(1).numpy(), lane.numpy())
    return metrics.compute()


def _flip(images: torch.Tensor, drivable: torch.Tensor, lane: torch.Tensor, generator: torch.Generator):
    """Mirror a random half of the batch left-right (labels stay valid under a horizontal flip)."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images[flip] = images[flip].flip(-1)
    drivable[flip] = drivable[flip].flip(-1)
    lane[flip] = lane[flip].flip(-1)
    return images, drivable, lane


def train_twinlitenet(config: TwinLiteNetTrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; return a summary with the best validation metrics and the checkpoint paths."""
    if config.threads:
        torch.set_num_threads(config.threads)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = TwinLiteNet()
    optimizer = torch.optim.Adam(model.parameters(), config.learning_rate, weight_decay=config.weight_decay)
    criterion = TwinLiteNetLoss(TwinLiteNetLossWeights(config.focal_gamma, config.tversky_alpha, config.tversky_beta))
    start_epoch, best_score, history = 0, float("-inf"), []
    last_path, best_path = output / "last.pth", output / "best.pth"
    if resume:
        start_epoch, best_score, history = _load_training_state(last_path, model, optimizer)
        log.info("resuming from %s at epoch %d", last_path, start_epoch)
    train_set, val_set = build_datasets(config)
    model_config = dataclasses.asdict(TwinLiteNetConfig(input_width=config.input_width, input_height=config.input_height))

    for epoch in range(start_epoch, config.epochs):
        lr = poly_learning_rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)  # same order when resumed
        loader = DataLoader(
            train_set, batch_size=config.batch_size, shuffle=True, generator=generator,
            num_workers=config.data.workers, drop_last=len(train_set) >= config.batch_size,
        )
        model.train()
        started = time.perf_counter()
        totals = {"loss": 0.0, "drivable": 0.0, "lane": 0.0}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for images, drivable, lane in bar:
            if config.horizontal_flip:
                images, drivable, lane = _flip(images, drivable, lane, generator)
            losses = criterion(model(images), drivable, lane)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            for name in totals:
                totals[name] += losses[name].item()
            bar.set_postfix(loss=f"{losses['loss'].item():.3f}", lr=f"{lr:.2e}")
        record = {"epoch": epoch + 1, "lr": lr, "seconds": round(time.perf_counter() - started, 1)}
        record.update({f"train_{k}": v / max(1, len(loader)) for k, v in totals.items()})
        if (epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs:
            metrics = validate(model, val_set, config.batch_size)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            score = metrics["drivable_miou"] + metrics["lane_iou"]
            if score > best_score:
                best_score = score
                save_checkpoint(
                    best_path, "twinlitenet", model.state_dict(), model_config,
                    {"epoch": epoch + 1, "validation": metrics, "train_config": dataclasses.asdict(config)},
                )
        history.append(record)
        log.info("epoch %s", json.dumps(record))
        torch.save(
            {
                "format": RESUME_FORMAT,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "best_score": best_score,
                "history": history,
            },
            last_path,
        )
        (output / "history.json").write_text(json.dumps(history, indent=2))
    return {"best_checkpoint": str(best_path), "last_checkpoint": str(last_path), "history": history}


def _load_training_state(path: Path, model: TwinLiteNet, optimizer: torch.optim.Optimizer):
    if not path.is_file():
        raise WeightsError(f"cannot resume: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise WeightsError(f"cannot resume: {path} is not a training state written by this trainer")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), float(state["best_score"]), list(state["history"])
