"""Pieces the recipes share: image tensors, validation through the backend itself, initialisation."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ...backends import create_backend
from ...core.failures import FrameFailures
from ...evaluation.evaluator import Evaluator
from ...evaluation.loop import run_frames


def image_tensor(image: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> torch.Tensor:
    """BGR uint8 (H, W, 3) → (3, H, W) float32 RGB in [0, 1], then ``(x - mean) / std`` if given: the
    backends' own pre-processing, so training and inference see the same numbers."""
    tensor = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1).float().div_(255.0)
    if mean is not None:
        tensor = (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return tensor


def validate_with_backend(backend: str, network: nn.Module, model_config: dict[str, Any], samples: Dataset,
                          thresholds: dict[str, float] | None = None) -> dict:
    """Run ``network`` through its backend (the same pre- and post-processing as inference) on every
    sample and score it with the :class:`~panoptic_perception.evaluation.evaluator.Evaluator`; returns
    its summary.

    The samples go through :func:`~panoptic_perception.evaluation.loop.run_frames`, untimed (the summary
    has no latency): a sample that cannot be read is reported on stderr and left out, as in ``evaluate``;
    a sample that the network, its post-processing or the scoring fails on raises RuntimeError naming it
    (a model in training that fails is a bug to see, not a sample to skip: a best checkpoint chosen on
    the samples it happens to survive would mislead)."""
    runner = create_backend(backend, network=network, fast=False, **model_config)
    if thresholds:
        runner.set_thresholds(**thresholds)
    evaluator = Evaluator(runner.label_map, runner.capabilities)
    failures = FrameFailures(label="validation")
    run_frames(runner, (samples[index] for index in range(len(samples))), failures, evaluator, timed=False)
    failed = [f for f in failures.to_list() if f["stage"] != "read"]
    if failed:
        first = failed[0]
        raise RuntimeError(f"validation failed on {len(failed)} of {len(samples)} samples; first: {first['frame']} "
                           f"({first['stage']}): {first['error']}")
    return evaluator.compute()


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], rename=None) -> dict[str, list[str]]:
    """Copy the tensors of ``state`` whose names (after ``rename``, a function of the name that may return
    None to drop it) and shapes match ``model``'s; returns the ``loaded``, ``skipped`` (checkpoint names)
    and ``missing`` (model names left as they were) lists."""
    own = model.state_dict()
    loaded, skipped, update = [], [], {}
    for name, tensor in state.items():
        target = rename(name) if rename else name
        if target in own and own[target].shape == tensor.shape:
            update[target] = tensor
            loaded.append(target)
        else:
            skipped.append(name)
    model.load_state_dict(update, strict=False)
    return {"loaded": loaded, "skipped": skipped, "missing": sorted(set(own) - set(update))}
