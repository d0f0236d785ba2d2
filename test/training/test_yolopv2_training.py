"""The yolopv2 recipe: examples letterboxed as the backend does and augmented with their boxes and masks,
batches the loss takes, a few optimisation steps, validation through the backend, an end-to-end run of the
shared engine whose best.pth the backend loads, and the synthetic training config."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from panoptic_perception.backends import create_backend, read_checkpoint
from panoptic_perception.core.preprocess import ResizeMode, prepare_batch
from panoptic_perception.core.types import Detections, PerceptionResult
from panoptic_perception.data.sample import Sample
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.training.config import from_dict
from panoptic_perception.training.data import DataConfig, DataSource
from panoptic_perception.training.engine import OptimizerConfig, ScheduleConfig, TrainConfig, train
from panoptic_perception.training.recipes import RECIPES
from panoptic_perception.training.recipes.yolopv2 import YOLOPv2Recipe
from panoptic_perception.training.yolopv2_losses import YOLOPv2LossWeights

SMALL = dict(width=0.25, depth=0.33, num_classes=3, class_names=["car", "truck", "person"], class_ids=[26, 27, 24],
             input_width=128, input_height=96)
PLAIN = dict(scale=[1.0, 1.0], translate=0.0, flip=0.0, hsv=[0.0, 0.0, 0.0])
CONFIG = Path(__file__).resolve().parents[2] / "panoptic_perception" / "training" / "configs" / "yolopv2_synthetic.yaml"
CITYSCAPES_IDS = {"car": 26, "truck": 27, "person": 24}


def recipe(model: dict | None = None, **options) -> YOLOPv2Recipe:
    return YOLOPv2Recipe(TrainConfig(backend="yolopv2", output_dir="unused", model={**SMALL, **(model or {})},
                                     recipe=options))


def hand_sample(size, boxes, names, drivable, lane, seed=0) -> Sample:
    """A sample with hand-made ground truth (boxes x1 y1 x2 y2 in source pixels)."""
    width, height = size
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    detections = Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.ones(len(names), np.float32),
                            np.array([CITYSCAPES_IDS.get(n, 33) for n in names], np.int64), list(names))
    truth = PerceptionResult(size, "truth", drivable_mask=drivable.astype(np.uint8), lane_mask=lane.astype(np.uint8),
                             detections=detections)
    return Sample("hand", image, truth)


def synthetic(seed: int, size=(128, 96)) -> Sample:
    scene = generate_scene(seed, *size)
    return Sample(f"s{seed}", scene.image, scene.to_result())


def to_bgr(image: torch.Tensor) -> np.ndarray:
    return (image * 255).round().byte().permute(1, 2, 0).numpy()[:, :, ::-1]


def test_without_augmentation_an_example_is_the_backends_letterbox():
    # 160x90 into 128x96: scale 0.8, content 128x72, 12 rows of padding above and below.
    drivable = np.zeros((90, 160), bool)
    drivable[45:] = True
    lane = np.zeros((90, 160), bool)
    lane[:, 80:90] = True
    boxes = [(10, 20, 50, 60), (120, 30, 150, 80), (100, 10, 103, 40), (60, 60, 80, 80)]
    names = ["car", "truck", "person", "bicycle"]  # a 2.4-pixel-wide person; a class the model lacks
    source = hand_sample((160, 90), boxes, names, drivable, lane)
    example = recipe(**PLAIN).example(source, np.random.default_rng(0))

    expected, _ = prepare_batch([source.image], (128, 96), ResizeMode.LETTERBOX, 114)
    assert example["image"].dtype == torch.float32 and torch.equal(example["image"], expected[0])
    targets = example["targets"].numpy()
    # car (10, 20, 50, 60) * 0.8 + (0, 12) = (8, 28, 40, 60); truck → (96, 36, 120, 76)
    assert np.allclose(targets, [[0, 24, 44, 32, 32], [1, 108, 56, 24, 40]], atol=1e-4)
    drivable_out, lane_out = example["drivable"].numpy(), example["lane"].numpy()
    assert example["drivable"].dtype == torch.int64 and example["lane"].dtype == torch.int64
    # nearest neighbour: network row 12 + y shows source row floor(1.25 y); source rows >= 45 → y >= 36
    assert (drivable_out[48:84] == 1).all() and drivable_out[:48].sum() == 0 and drivable_out[84:].sum() == 0
    # source columns 80..89 → network columns 64..71, on the 72 image rows only
    assert (lane_out[12:84, 64:72] == 1).all() and lane_out.sum() == 72 * 8


def test_a_flip_and_a_scale_move_boxes_and_masks_exactly():
    drivable = np.zeros((96, 128), bool)
    drivable[48:] = True
    lane = np.zeros((96, 128), bool)
    lane[:, :16] = True
    boxes = [(10, 20, 50, 60), (60, 40, 66, 80)]  # the person is 6 pixels wide: 3 at half scale
    source = hand_sample((128, 96), boxes, ["car", "person"], drivable, lane)
    kept = recipe(**PLAIN).example(source, np.random.default_rng(0))["targets"].numpy()
    assert np.allclose(kept, [[0, 30, 40, 40, 40], [2, 63, 60, 6, 40]]), "at scale 1 both are targets"

    example = recipe(**{**PLAIN, "scale": [0.5, 0.5], "flip": 1.0}).example(source, np.random.default_rng(0))
    # half size: content 64x48 at (32, 24); car → (37, 34, 57, 54); mirrored x → 128 - x: (71, 34, 91, 54)
    assert np.allclose(example["targets"].numpy(), [[0, 81, 44, 20, 20]]), "the 3-pixel person is dropped"
    canvas = np.full((96, 128, 3), 114, np.uint8)
    canvas[24:72, 32:96] = cv2.resize(source.image, (64, 48), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(to_bgr(example["image"]), canvas[:, ::-1])
    drivable_out, lane_out = example["drivable"].numpy(), example["lane"].numpy()
    assert (drivable_out[48:72, 32:96] == 1).all() and drivable_out.sum() == 24 * 64
    # lane columns 0..15 → 32..39 at half scale → 88..95 mirrored
    assert (lane_out[24:72, 88:96] == 1).all() and lane_out.sum() == 48 * 8


def test_scaling_up_crops_the_image_and_drops_boxes_mostly_cut_off():
    blank = np.zeros((96, 128), bool)
    boxes = [(0, 40, 20, 60), (28, 40, 48, 60), (10, 40, 34, 60)]
    source = hand_sample((128, 96), boxes, ["car", "truck", "person"], blank, blank)
    example = recipe(**{**PLAIN, "scale": [2.0, 2.0]}).example(source, np.random.default_rng(0))
    # double size: content 256x192 at (-64, -48). car → x -64..-24: gone. truck → (-8, 32, 32, 72), clipped
    # to (0, 32, 32, 72): 80 % visible. person → (-44, 32, 4, 72): 4 pixels wide but 8 % visible: dropped.
    assert np.allclose(example["targets"].numpy(), [[1, 16, 52, 32, 40]])
    big = cv2.resize(source.image, (256, 192), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(to_bgr(example["image"]), big[48:144, 64:192])


def test_translation_moves_image_and_boxes_together_and_colour_jitter_only_the_image():
    source = synthetic(3)
    plain = recipe(**PLAIN).example(source, np.random.default_rng(0))
    shifts = set()
    for seed in range(4):
        moved = recipe(**{**PLAIN, "translate": 0.2}).example(source, np.random.default_rng(seed))
        image = to_bgr(moved["image"])
        found = [(dx, dy) for dy in range(-19, 20) for dx in range(-26, 27)
                 if np.array_equal(image[max(0, dy):96 + min(0, dy), max(0, dx):128 + min(0, dx)],
                                   source.image[max(0, -dy):96 - max(0, dy), max(0, -dx):128 - max(0, dx)])]
        assert len(found) == 1, (seed, found)
        dx, dy = found[0]
        shifts.add((dx, dy))
        lane = np.zeros((96, 128), np.int64)
        lane[max(0, dy):96 + min(0, dy), max(0, dx):128 + min(0, dx)] = \
            source.truth.lane_mask[max(0, -dy):96 - max(0, dy), max(0, -dx):128 - max(0, dx)]
        assert np.array_equal(moved["lane"].numpy(), lane)
        inside = plain["targets"].numpy() + np.array([0, dx, dy, 0, 0], np.float32)
        whole = (inside[:, 1] - inside[:, 3] / 2 >= 0) & (inside[:, 1] + inside[:, 3] / 2 <= 128) & \
                (inside[:, 2] - inside[:, 4] / 2 >= 0) & (inside[:, 2] + inside[:, 4] / 2 <= 96)
        targets = moved["targets"].numpy()
        for row in inside[whole]:  # boxes that stay whole in the image move by exactly (dx, dy)
            assert np.abs(targets - row).max(1).min() < 1e-4
    assert len(shifts) > 1 and (0, 0) not in shifts

    half = {**PLAIN, "scale": [0.5, 0.5]}
    grey = recipe(**half).example(source, np.random.default_rng(5))
    jittered = recipe(**{**half, "hsv": [0.015, 0.7, 0.4]}).example(source, np.random.default_rng(5))
    for name in ("targets", "drivable", "lane"):
        assert torch.equal(jittered[name], grey[name])
    image = to_bgr(jittered["image"])
    assert not np.array_equal(image, to_bgr(grey["image"]))
    assert (image[:24] == 114).all() and (image[:, :32] == 114).all(), "padding keeps the inference value"


def test_collate_gives_what_the_loss_takes():
    r = recipe(**PLAIN)
    examples = [r.example(synthetic(s), np.random.default_rng(s)) for s in (1, 2)]
    batch = r.collate(examples)
    assert batch["image"].shape == (2, 3, 96, 128) and batch["image"].dtype == torch.float32
    counts = [len(e["targets"]) for e in examples]
    assert batch["targets"].shape == (sum(counts), 6) and batch["targets"].dtype == torch.float32 and min(counts) > 0
    assert batch["targets"][:, 0].tolist() == [0.0] * counts[0] + [1.0] * counts[1]
    assert set(batch["targets"][:, 1].tolist()) <= {0.0, 1.0, 2.0}
    for name in ("drivable", "lane"):
        assert batch[name].shape == (2, 96, 128) and batch[name].dtype == torch.int64
        assert set(batch[name].unique().tolist()) == {0, 1}
    torch.manual_seed(0)
    losses = r.losses(r.build_model().train(), batch)
    assert set(losses) == {"loss", "loss_box", "loss_obj", "loss_cls", "loss_drivable", "loss_lane"}
    parts = sum(v for k, v in losses.items() if k != "loss")
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    assert torch.allclose(losses["loss"], parts) and losses["loss"].requires_grad


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    r = recipe(**PLAIN)
    batch = r.collate([r.example(synthetic(s), np.random.default_rng(s)) for s in (1, 2)])
    model = r.build_model().train()
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    history = []
    for _ in range(15):
        losses = r.losses(model, batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], [h["loss"] for h in history]
    for name in ("loss_box", "loss_drivable", "loss_lane"):
        assert history[-1][name] < history[0][name], (name, [h[name] for h in history])


def test_validation_runs_the_backend_and_scores_detection_and_masks():
    torch.manual_seed(0)
    r = recipe()
    model = r.build_model().eval()
    metrics = r.validate(model, [synthetic(7, (192, 108)), synthetic(8, (192, 108))])
    assert set(metrics) == {"ap", "ap50", "map50", "recall", "drivable_miou", "lane_iou", "lane_recall"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    assert model.export is False, "the network is left in training form"
    assert r.score(metrics) == pytest.approx(metrics["ap50"] + (metrics["drivable_miou"] + metrics["lane_iou"]) / 2)
    assert r.score({"ap50": math.nan, "drivable_miou": 0.5, "lane_iou": 0.1}) == pytest.approx(0.3)
    assert recipe(mask_score_weight=0.0).score(metrics) == metrics["ap50"]


def test_the_engine_trains_it_and_the_backend_loads_best_pth(tmp_path):
    config = TrainConfig(
        backend="yolopv2", output_dir=str(tmp_path / "run"), epochs=1, batch_size=2, threads=1, ema_decay=0.9999,
        optimizer=OptimizerConfig("adam", 1e-3), schedule=ScheduleConfig("cosine", warmup_iterations=1),
        data=DataConfig(train=[DataSource(count=4, width=128, height=96)],
                        val=[DataSource(count=2, first_seed=1_000_000, width=160, height=90)]),
        model=SMALL, recipe={"hsv": [0.015, 0.7, 0.4]},
    )
    r = RECIPES["yolopv2"](config)
    summary = train(config, r, progress=False)
    record = summary["history"][0]
    assert {"train_loss", "train_loss_box", "train_loss_lane", "val_ap50", "val_drivable_miou",
            "val_lane_iou"} <= set(record)
    checkpoint = read_checkpoint(summary["best_checkpoint"])
    assert checkpoint.backend == "yolopv2" and checkpoint.config == r.model_config()
    assert checkpoint.metadata["validation"]["ap50"] == record["val_ap50"]

    backend = create_backend("yolopv2", weights=summary["best_checkpoint"])  # the fast, re-parameterised path
    assert backend.input_size == (128, 96) and backend.label_map.ids.tolist() == [26, 27, 24]
    backend.set_thresholds(score=0.0)  # two steps of training: every anchor, to see every class slot
    result = backend(synthetic(9, (160, 90)).image)
    detections = result.detections
    assert len(detections) > 0 and set(detections.class_ids.tolist()) <= {24, 26, 27}
    assert all(CITYSCAPES_IDS[name] == cid for name, cid in zip(detections.class_names, detections.class_ids))
    assert result.drivable_mask.shape == (90, 160) and result.lane_mask.shape == (90, 160)


def test_the_synthetic_training_config_builds_the_recipe():
    config = from_dict(TrainConfig, yaml.safe_load(CONFIG.read_text()), f"{CONFIG.name}: ")
    assert config.backend == "yolopv2" and RECIPES["yolopv2"] is YOLOPv2Recipe
    r = YOLOPv2Recipe(config)
    o = r.model_options
    assert (o.width, o.depth, o.num_classes) == (0.25, 0.33, 3) and r.size == (320, 192)
    assert o.class_names == ("car", "truck", "person") and o.class_ids == (26, 27, 24)
    assert r.slot_of == {"car": 0, "truck": 1, "person": 2}
    assert config.optimizer.name == "sgd" and config.optimizer.momentum == 0.937 and config.optimizer.nesterov
    assert config.schedule.name == "cosine" and config.schedule.warmup_iterations > 0
    assert config.ema_decay == 0.9999
    assert r.loss_weights == YOLOPv2LossWeights()
    for source in config.data.train:  # rendered at the network input size
        assert (source.width, source.height) == r.size
    with pytest.raises(ValueError, match="scale"):
        recipe(scale=[2.0, 1.0])
    with pytest.raises(ValueError, match="class slots"):
        recipe(dict(num_classes=2))
