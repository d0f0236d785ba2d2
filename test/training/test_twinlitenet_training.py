"""The TwinLiteNet trainer on a few tiny synthetic scenes: checkpoints, validation, resume, config."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from panoptic_perception.backends import create_backend, read_checkpoint
from panoptic_perception.training import train_from_config
from panoptic_perception.training.config import DataConfig, TwinLiteNetTrainConfig, from_dict
from panoptic_perception.training.twinlitenet import poly_learning_rate, train_twinlitenet


def tiny_config(tmp_path, epochs: int = 2) -> TwinLiteNetTrainConfig:
    return TwinLiteNetTrainConfig(
        input_width=64, input_height=48, epochs=epochs, batch_size=3, learning_rate=2e-3,
        output_dir=str(tmp_path / "run"), data=DataConfig(train_count=6, val_count=3),
    )


def test_training_writes_a_checkpoint_the_backend_loads(tmp_path):
    summary = train_twinlitenet(tiny_config(tmp_path), progress=False)
    history = summary["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(0.0 <= r["val_drivable_miou"] <= 1.0 and r["train_loss"] > 0 for r in history)
    checkpoint = read_checkpoint(summary["best_checkpoint"])
    assert checkpoint.backend == "twinlitenet"
    assert checkpoint.config["input_width"] == 64 and checkpoint.config["input_height"] == 48
    assert "drivable_miou" in checkpoint.metadata["validation"]
    backend = create_backend("twinlitenet", summary["best_checkpoint"])
    assert backend.input_size == (64, 48)
    assert backend(np.zeros((30, 50, 3), np.uint8)).drivable_mask.shape == (30, 50)
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == history


def test_training_on_a_bdd100k_folder(tmp_path, make_bdd100k_folder):
    root = make_bdd100k_folder(tmp_path / "bdd", "train", names=("a", "b", "c"))
    make_bdd100k_folder(root, "val", names=("d",))
    config = dataclasses.replace(
        tiny_config(tmp_path, epochs=1), data=DataConfig(source="bdd100k", root=str(root))
    )
    summary = train_twinlitenet(config, progress=False)
    assert summary["history"][0]["val_images"] == 1
    assert read_checkpoint(summary["best_checkpoint"]).config["input_width"] == 64


def test_resume_continues_exactly_where_training_stopped(tmp_path):
    straight = train_twinlitenet(tiny_config(tmp_path / "a", epochs=2), progress=False)
    # An interrupted run: the first epoch of the same schedule (the learning rate of epoch 1 does not
    # depend on the number of epochs), then resumed from its last.pth.
    config = tiny_config(tmp_path / "b", epochs=2)
    train_twinlitenet(dataclasses.replace(config, epochs=1), progress=False)
    state = torch.load(tmp_path / "b" / "run" / "last.pth", weights_only=True)
    assert state["epoch"] == 1
    resumed = train_twinlitenet(config, resume=True, progress=False)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    a = torch.load(straight["last_checkpoint"], weights_only=True)["model"]
    b = torch.load(resumed["last_checkpoint"], weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_poly_learning_rate_decays_to_zero():
    config = TwinLiteNetTrainConfig(epochs=4, learning_rate=1e-3, lr_power=1.5)
    rates = [poly_learning_rate(config, e) for e in range(4)]
    assert rates[0] == 1e-3 and rates == sorted(rates, reverse=True)
    assert rates[2] == pytest.approx(1e-3 * 0.5**1.5)


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown keys in data.: colour"):
        from_dict(TwinLiteNetTrainConfig, {"data": {"colour": 1}})
    with pytest.raises(ValueError, match="multiples of 8"):
        TwinLiteNetTrainConfig(input_width=100)
    with pytest.raises(ValueError, match="overlap"):
        DataConfig(train_count=10, val_first_seed=5)
    with pytest.raises(ValueError, match="needs data.root"):
        DataConfig(source="bdd100k")
    config = tmp_path / "c.yaml"
    config.write_text("backend: yolopx\n")
    with pytest.raises(ValueError, match="no trainer for backend 'yolopx'"):
        train_from_config(config)


def test_shipped_config_is_valid():
    from pathlib import Path

    import yaml

    values = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "twinlitenet_synthetic.yaml").read_text())
    assert values.pop("backend") == "twinlitenet"
    config = from_dict(TwinLiteNetTrainConfig, values)
    assert (config.input_width, config.input_height) == (320, 184)
