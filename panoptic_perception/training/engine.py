"""The training loop every recipe shares: optimiser, schedule, checkpoints, resume, validation, logs,
distributed data parallel and mixed precision.

A recipe (:class:`Recipe`) says what is specific to a paper: the network, how a sample becomes a
training example, the losses, and how to validate. :func:`train` does the rest:

- **optimiser** (:class:`OptimizerConfig`): SGD (momentum, Nesterov) or Adam / AdamW, weight decay;
- **schedule** (:class:`ScheduleConfig`): poly, cosine, linear or constant, per iteration or per epoch,
  with a linear warm-up;
- **checkpoints** in ``output_dir``: ``last.pth`` (everything needed to resume: weights, optimiser, EMA,
  scaler, RNG states, history) after every epoch; ``best.pth``, a backend checkpoint (weights, model
  config, validation metrics) whenever the recipe's score improves;
- **resume** continues bit for bit: the order of samples and every augmentation are drawn from
  generators seeded by (seed, epoch, sample), and torch's global RNG state is saved with the epoch;
- **logs**: a tqdm bar, ``history.json``, ``metrics.csv``, ``curves.png`` (losses and validation
  metrics per epoch) and, if the ``tensorboard`` package is installed, TensorBoard event files;
- **distributed data parallel** under ``torchrun``: one process per device, each taking its slice of
  every global batch (:class:`GlobalBatchSampler`), gradients averaged by DDP, SyncBatchNorm when the
  config asks for it (CUDA only), checkpoints, logs and validation on rank 0 only. ``batch_size`` is the
  global batch: each of the N processes takes ``batch_size / N`` samples of every step, and the global
  batches are those of one process. Where the losses are means over the batch and no layer depends on
  the batch (GroupNorm, frozen BatchNorm, or SyncBatchNorm), N processes end with the weights of one
  process up to float rounding (tested with gloo, 2 processes, 6 SGD steps: max |Δw| 1.8e-7, asserted
  < 1e-5); BatchNorm layers that learn statistics see only their process's share of each batch unless
  synchronised;
- **mixed precision** (``amp``) with :func:`torch.autocast`: float16 with a gradient scaler on CUDA,
  bfloat16 (no scaler needed) on the CPU, where CPUs with AMX / AVX-512 BF16 run convolutions faster
  (CycleNet's bundled variant on the 2-core development machine: the network's step 1.5x, a whole
  epoch with data and losses 1.2x); weights, optimizer
  state and validation stay float32;
- an optional **EMA** of the weights (``ema_decay``), validated and saved instead of the raw weights.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..backends.weights import TRAINING_STATE_FORMAT_PREFIX, WeightsError, save_checkpoint
from ..errors import ConfigurationError
from .data import DataConfig

log = logging.getLogger("panoptic_perception.training")

RESUME_FORMAT = TRAINING_STATE_FORMAT_PREFIX + "2"


@dataclass
class OptimizerConfig:
    """``name``: sgd, adam or adamw; ``learning_rate`` is the peak (after warm-up)."""

    name: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer.name must be sgd, adam or adamw, got {self.name!r}")
        self.betas = tuple(self.betas)


@dataclass
class ScheduleConfig:
    """The learning-rate factor over training.

    ``poly``: ``(1 - t) ** power`` (DeepLab's "poly"); ``cosine``: from 1 to ``final_factor`` along half a
    cosine; ``linear``: straight to ``final_factor``; ``constant``. ``t`` runs from 0 to 1 over the
    iterations (``per: iteration``) or epochs (``per: epoch``). A linear warm-up from
    ``warmup_start_factor`` over the first ``warmup_iterations`` iterations multiplies it.
    """

    name: str = "poly"
    power: float = 0.9
    final_factor: float = 0.0
    per: str = "iteration"
    warmup_iterations: int = 0
    warmup_start_factor: float = 0.001

    def __post_init__(self) -> None:
        if self.name not in ("poly", "cosine", "linear", "constant"):
            raise ValueError(f"schedule.name must be poly, cosine, linear or constant, got {self.name!r}")
        if self.per not in ("iteration", "epoch"):
            raise ValueError(f"schedule.per must be iteration or epoch, got {self.per!r}")

    def factor(self, iteration: int, epoch: int, iterations: int, epochs: int) -> float:
        """The learning-rate factor at ``iteration`` (global, from 0) in ``epoch`` (from 0)."""
        t = iteration / iterations if self.per == "iteration" else epoch / epochs
        if self.name == "poly":
            factor = (1 - min(t, 1.0)) ** self.power
        elif self.name == "cosine":
            factor = self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        elif self.name == "linear":
            factor = 1 - (1 - self.final_factor) * min(t, 1.0)
        else:
            factor = 1.0
        if iteration < self.warmup_iterations:
            w = iteration / self.warmup_iterations
            factor *= self.warmup_start_factor + (1 - self.warmup_start_factor) * w
        return factor


@dataclass
class TrainConfig:
    """One training run. ``model``: the backend's architecture options (its config dataclass);
    ``recipe``: the recipe's own options (losses, augmentation; see the recipe's options dataclass).

    ``batch_size`` is the global batch (all processes together). ``init_weights``: a checkpoint to start
    from (a backend checkpoint, a torchvision / timm state dict, ...; the recipe maps and reports the keys).
    """

    backend: str
    output_dir: str
    epochs: int = 10
    batch_size: int = 8
    seed: int = 0
    val_every: int = 1
    threads: int | None = None
    device: str = "cpu"
    amp: bool = False
    ema_decay: float = 0.0
    sync_batchnorm: bool = False
    gradient_clip: float = 0.0
    init_weights: str | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("epochs, batch_size and val_every must be at least 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


class Recipe(Protocol):
    """What a paper's training needs beyond the shared loop (one class per backend in ``recipes/``)."""

    backend: str

    def __init__(self, config: TrainConfig) -> None: ...

    def build_model(self) -> nn.Module:
        """The trainable network (a backend's network, built from ``config.model``)."""

    def model_config(self) -> dict[str, Any]:
        """The backend config stored in checkpoints (architecture and input size)."""

    def initialize(self, model: nn.Module, path: str) -> dict[str, Any]:
        """Load ``path`` into ``model`` where it fits; report what loaded (``loaded``, ``skipped`` keys)."""

    def example(self, sample, rng: np.random.Generator) -> Any:
        """A training example from a sample, augmentation drawn from ``rng``."""

    def collate(self, examples: list) -> Any:
        """A batch from examples."""

    def losses(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Scalar losses of one batch; ``loss`` is what is minimised."""

    def validate(self, model: nn.Module, samples: Dataset) -> dict[str, float]:
        """Validation metrics of the (eval-mode) model on ``samples``."""

    def score(self, metrics: dict[str, float]) -> float:
        """Higher is better: picks ``best.pth``."""


class Examples(Dataset):
    """A recipe's training examples of ``samples`` in one epoch. Sample ``i``'s augmentation is drawn
    from a generator seeded by (seed, epoch, i): the same in every process, loader worker and resumed
    run."""

    def __init__(self, samples: Dataset, make: Callable[[Any, np.random.Generator], Any], seed: int) -> None:
        self.samples, self.make, self.seed, self.epoch = samples, make, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.make(self.samples[index], np.random.default_rng([self.seed, self.epoch, index]))


# -- distributed ------------------------------------------------------------------------------------------
class GlobalBatchSampler(torch.utils.data.Sampler):
    """One process's share of every global batch of an epoch.

    The epoch's order is the shuffle a ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(seed))``
    makes (that loader first draws its workers' base seed from the generator, then a permutation); it is
    cut into ``len(self)`` global batches of ``batch_size`` (the rest is dropped), and process ``rank``
    of ``world_size`` takes the ``rank``-th contiguous slice of ``batch_size / world_size`` samples of
    each. One process therefore sees exactly the standard shuffled batches, and N processes together see
    the same global batch at every step, so that DDP's averaged gradient is the single-process one.
    """

    def __init__(self, length: int, batch_size: int, rank: int, world_size: int, seed: int) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        self.length, self.batch_size, self.rank, self.world_size, self.seed = length, batch_size, rank, world_size, seed

    def __len__(self) -> int:
        return self.length // self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # the DataLoader's base-seed draw
        order = torch.randperm(self.length, generator=generator).tolist()
        share = self.batch_size // self.world_size
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start + self.rank * share: start + (self.rank + 1) * share]


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str) -> "Distributed":
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK; initialises the process group (gloo on CPU, nccl on CUDA)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group: gloo's threads left to interpreter exit can abort the process."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over the processes (every process must call it with the same keys)."""
        if not self.enabled or not values:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world_size).tolist()))


class ModelEMA:
    """Exponential moving average of a model's floating-point state, with YOLOv5/v7's warm-up of the decay
    (``decay * (1 - exp(-updates / 2000))``) so that early weights do not dominate."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.decay * (1 - math.exp(-self.updates / 2000))
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(current.detach(), alpha=1 - decay)
            else:
                average.copy_(current)


def build_optimizer(config: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(parameters, config.learning_rate, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    return optimizer(parameters, config.learning_rate, betas=config.betas, weight_decay=config.weight_decay)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train(config: TrainConfig, recipe: Recipe, resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Run ``recipe`` as ``config`` says; returns the summary (checkpoint paths, history)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    distributed = Distributed.from_environment(config.device)
    if config.batch_size % distributed.world_size:
        raise ConfigurationError(f"batch_size {config.batch_size} is not divisible by {distributed.world_size} processes")
    device = torch.device(config.device if not config.device.startswith("cuda") or not distributed.enabled
                          else f"cuda:{distributed.local_rank}")
    output = Path(config.output_dir)
    if distributed.main:
        output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    from .data import open_sources

    train_samples = open_sources(config.data.train, progress and distributed.main)
    val_samples = open_sources(config.data.val, progress and distributed.main) if config.data.val else None
    train_set = Examples(train_samples, recipe.example, config.seed)
    if len(train_set) < config.batch_size:  # the sampler drops the last partial batch: no step would run
        raise ConfigurationError(f"the training data has {len(train_set)} samples, fewer than batch_size {config.batch_size}")

    model = recipe.build_model().to(device)
    init_report = recipe.initialize(model, config.init_weights) if config.init_weights else None
    if init_report is not None and not init_report["loaded"]:
        raise ConfigurationError(f"init_weights {config.init_weights}: no tensor fits this {config.backend} model "
                         f"({len(init_report['skipped'])} skipped); weights of another backend or variant?")
    if init_report and distributed.main:
        log.info("initialised from %s: %d tensors loaded, %d skipped", config.init_weights,
                 len(init_report["loaded"]), len(init_report["skipped"]))
    if config.sync_batchnorm and distributed.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(config.optimizer, model)
    ema = ModelEMA(model, config.ema_decay) if config.ema_decay else None
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")
    start_epoch, best_score, history = 0, float("-inf"), []
    last_path, best_path = output / "last.pth", output / "best.pth"
    if resume:
        start_epoch, best_score, history = _load_state(last_path, model, optimizer, ema, scaler)
        log.info("resuming from %s at epoch %d", last_path, start_epoch)
    if distributed.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    steps_per_epoch = len(train_set) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    writer = _tensorboard(output) if distributed.main else None
    for epoch in range(start_epoch, config.epochs):
        train_set.epoch = epoch
        seed = config.seed * 100_003 + epoch
        sampler = GlobalBatchSampler(len(train_set), config.batch_size, distributed.rank, distributed.world_size, seed)
        # the loader's own generator only seeds its workers (augmentations are seeded per sample) and keeps
        # torch's global RNG out of the data order
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.data.workers, collate_fn=recipe.collate,
                            generator=torch.Generator().manual_seed(seed))
        model.train()
        started = time.perf_counter()
        totals: dict[str, float] = {}
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not (progress and distributed.main), leave=False)
        for step, batch in enumerate(bar):
            if step >= steps_per_epoch:
                break
            iteration = epoch * steps_per_epoch + step
            lr = config.optimizer.learning_rate * config.schedule.factor(iteration, epoch, total_steps, config.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, enabled=config.amp):
                losses = recipe.losses(model, _to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if config.gradient_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(_unwrap(model))
            values = {name: float(value.detach()) for name, value in losses.items()}
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value
            bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}")
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "seconds": round(time.perf_counter() - started, 1)}
        totals = distributed.mean(totals)  # the logged losses are those of the global batches
        record.update({f"train_{name}": value / steps_per_epoch for name, value in totals.items()})
        if distributed.main and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs) and val_samples is not None:
            evaluated = (ema.model if ema is not None else _unwrap(model)).eval()
            with torch.no_grad():
                metrics = recipe.validate(evaluated, val_samples)
            record.update({f"val_{name}": value for name, value in metrics.items()})
            score = recipe.score(metrics)
            if score > best_score:
                best_score = score
                save_checkpoint(best_path, config.backend, _checkpoint_state(evaluated), recipe.model_config(),
                                {"epoch": epoch + 1, "validation": metrics, "train_config": dataclasses.asdict(config)})
        history.append(record)
        if distributed.main:
            log.info("epoch %s", json.dumps(record))
            _save_state(last_path, _unwrap(model), optimizer, ema, scaler, epoch + 1, best_score, history,
                        config.backend, recipe.model_config())
            _write_logs(output, history, writer)
            if on_epoch is not None:
                on_epoch(record)
        distributed.barrier()
    if writer is not None:
        writer.close()
    distributed.close()
    return {"best_checkpoint": str(best_path), "last_checkpoint": str(last_path), "history": history,
            "initialised": init_report, "rank": distributed.rank}


def _checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A plain module's state (SyncBatchNorm converted back keys alike: its state dict is BatchNorm's)."""
    return {name: value.detach().cpu() for name, value in model.state_dict().items()}


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _save_state(
    path: Path, model, optimizer, ema, scaler, epoch: int, best_score: float, history: list, backend: str,
    model_config: dict,
) -> None:
    # backend and config let `--weights last.pth` build the network as best.pth does (backends/weights.py).
    state = {
        "format": RESUME_FORMAT, "backend": backend, "config": dict(model_config),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "ema": None if ema is None else {"model": ema.model.state_dict(), "updates": ema.updates},
        "scaler": scaler.state_dict(), "epoch": epoch, "best_score": best_score, "history": history,
        "torch_rng": torch.get_rng_state(),
    }
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)  # a crash while saving leaves the previous state intact


def _load_state(path: Path, model, optimizer, ema, scaler) -> tuple[int, float, list]:
    if not path.is_file():
        raise WeightsError(f"cannot resume: {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise WeightsError(f"cannot resume: {path} is not a training state written by this trainer")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None and state["ema"] is not None:
        ema.model.load_state_dict(state["ema"]["model"])
        ema.updates = state["ema"]["updates"]
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]), float(state["best_score"]), list(state["history"])


def _tensorboard(output: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(output / "tensorboard"))


def _write_logs(output: Path, history: Sequence[dict], writer) -> None:
    (output / "history.json").write_text(json.dumps(history, indent=2))
    columns = sorted({key for record in history for key in record}, key=lambda k: (k != "epoch", k))
    with open(output / "metrics.csv", "w", newline="") as file:
        table = csv.DictWriter(file, columns)
        table.writeheader()
        table.writerows(history)
    _plot_curves(output / "curves.png", history, columns)
    if writer is not None:
        record = history[-1]
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(key, value, record["epoch"])
        writer.flush()


def _plot_curves(path: Path, history: Sequence[dict], columns: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = [c for c in columns if c.startswith("train_")]
    metrics = [c for c in columns if c.startswith("val_")]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys, title in ((axes[0], losses, "training losses"), (axes[1], metrics, "validation")):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in history if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if keys:
            ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
