"""The shared training loop: schedules, checkpoints, bit-exact resume, logs, EMA (with a toy recipe)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from panoptic_perception.backends import read_checkpoint
from panoptic_perception.training.engine import GlobalBatchSampler, ModelEMA, OptimizerConfig, ScheduleConfig, train
from toy_recipe import ToyRecipe, toy_config


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
    # The resume state loads as weights too (`--weights last.pth`): same backend and config, last weights.
    last = read_checkpoint(run / "last.pth")
    assert last.backend == "toy" and last.config == {"channels": 8} and last.metadata == {"epoch": 3}
    state = torch.load(run / "last.pth", weights_only=True)
    assert state["ema"] is None and all(torch.equal(v, state["model"][k]) for k, v in last.state_dict.items())


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
    # Read as weights, the resume state gives the EMA, as validation scored it (one epoch: the same as best).
    assert torch.equal(read_checkpoint(tmp_path / "run" / "last.pth").state_dict["0.weight"], best["0.weight"])


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="optimizer.name"):
        OptimizerConfig("rmsprop")
    with pytest.raises(ValueError, match="ema_decay"):
        toy_config(tmp_path, ema_decay=1.5)


def test_global_batches_are_the_standard_shuffle_split_between_processes():
    dataset = list(range(23))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(7))
    standard = [batch.tolist() for batch in loader]
    assert list(GlobalBatchSampler(23, 4, 0, 1, seed=7)) == standard
    halves = [list(GlobalBatchSampler(23, 4, rank, 2, seed=7)) for rank in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == standard
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        GlobalBatchSampler(23, 4, 0, 3, seed=7)


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_ddp_with_two_processes_ends_with_the_weights_of_one_process(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ddp_toy import main as train_toy

    script = str(Path(__file__).with_name("ddp_toy.py"))
    log = tmp_path / "two.log"
    with open(log, "w") as output:
        launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                     script, str(tmp_path / "two")], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                    stdout=output, stderr=subprocess.STDOUT)
    threads = torch.get_num_threads()
    try:
        # Meanwhile the same training in this one process, on one thread as each of the two.
        torch.set_num_threads(1)
        train_toy(tmp_path / "one")
        assert launcher.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        torch.set_num_threads(threads)
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    one = torch.load(tmp_path / "one" / "run" / "last.pth", weights_only=True)
    two = torch.load(tmp_path / "two" / "run" / "last.pth", weights_only=True)
    # Same global batches, gradients averaged by DDP: equal up to float rounding (the sum of two
    # half-batch means instead of one mean).
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=0, atol=1e-5, msg=name)
    assert one["history"][-1]["train_loss"] < one["history"][0]["train_loss"], "it trained"
    for a, b in zip(one["history"], two["history"]):  # losses logged over the global batches
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
    assert sorted(p.name for p in (tmp_path / "two" / "run").iterdir()) == sorted(p.name for p in (tmp_path / "one" / "run").iterdir())


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_torchrun_starts_the_training_module_with_a_backend_recipe(tmp_path):
    import os
    import subprocess
    import sys

    import yaml

    config = {
        "backend": "cyclenet", "output_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 2,
        "model": dict(width=0.125, rates=[1, 2, 3], aspp_bottleneck=16, aspp_growth=8, high_channels=16, low_channels=8,
                      decoder_channels=16, aux_channels=8, input_width=128, input_height=72),
        "data": {"train": [{"source": "synthetic", "count": 4, "width": 128, "height": 72}],
                 "val": [{"source": "synthetic", "count": 1, "first_seed": 1000000, "width": 128, "height": 72}]},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "panoptic_perception.training", "--config", str(path), "--quiet"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"best_checkpoint"') == 1, "one report, from rank 0"
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1] and "val_miou" in history[0] and history[0]["train_loss"] > 0
    assert read_checkpoint(tmp_path / "run" / "best.pth").backend == "cyclenet"


def test_amp_on_the_cpu_trains_in_bfloat16_and_keeps_float32_weights(tmp_path):
    config = toy_config(tmp_path, amp=True)
    recipe = ToyRecipe(config)
    dtypes: set[torch.dtype] = set()
    build = recipe.build_model

    def build_watched_model():
        model = build()
        model[0].register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
        return model

    recipe.build_model = build_watched_model
    history = train(config, recipe, progress=False)["history"]
    assert dtypes == {torch.bfloat16, torch.float32}, "training steps in bfloat16, validation in float32"
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert {value.dtype for value in state["model"].values() if value.is_floating_point()} == {torch.float32}
