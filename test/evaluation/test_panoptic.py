"""Panoptic quality: hand-made cases and parity with cityscapesscripts' evaluatePanoptic."""

import contextlib
import io
import json
import math
import multiprocessing

import numpy as np
import pytest
from PIL import Image

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.evaluation.panoptic import PanopticQuality

CAR, PERSON, ROAD = 26, 24, 7
CATEGORIES = {ROAD: False, PERSON: True, CAR: True}


def scene_map(rows: list[str], legend: dict[str, int]) -> np.ndarray:
    return np.array([[legend[ch] for ch in row] for row in rows], np.int64)


LEGEND = {".": 7000, "a": 26001, "b": 26002, "p": 24001, "q": 24002, "0": 0}
TRUTH = scene_map(
    [
        "........",
        ".aaa..bb",
        ".aaa..bb",
        "....pp..",
    ],
    LEGEND,
)


def test_perfect_prediction_has_pq_one():
    pq = PanopticQuality(CATEGORIES)
    pq.add(TRUTH, TRUTH)
    result = pq.compute()
    for group, n in (("all", 3), ("things", 2), ("stuff", 1)):
        assert result[group] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": n}
    assert result["per_class"][CAR] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 2, "fp": 0, "fn": 0}


def test_a_missed_instance_and_an_imperfect_match():
    prediction = TRUTH.copy()
    prediction[TRUTH == 26002] = 7000  # car b missed, painted as road
    prediction[1, 1] = 7000  # car a loses one of its 6 pixels
    pq = PanopticQuality(CATEGORIES)
    pq.add(prediction, TRUTH)
    result = pq.compute()
    car = result["per_class"][CAR]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 0, 1)
    assert car["sq"] == pytest.approx(5 / 6)
    assert car["rq"] == pytest.approx(1 / 1.5)
    assert car["pq"] == pytest.approx((5 / 6) / 1.5)
    road = result["per_class"][ROAD]  # 20 true road pixels, all predicted, plus 4 + 1 more
    assert road["tp"] == 1 and road["sq"] == pytest.approx(20 / 25)
    assert result["things"]["pq"] == pytest.approx(((5 / 6) / 1.5 + 1.0) / 2)
    assert result["all"]["n"] == 3


def test_void_pixels_do_not_count_against_a_prediction():
    truth = TRUTH.copy()
    truth[1:3, 3] = 0  # the right column of car a is unlabelled
    pq = PanopticQuality(CATEGORIES)
    pq.add(TRUTH, truth)  # the prediction still covers it
    car = pq.compute()["per_class"][CAR]
    assert car["tp"] == 2 and car["sq"] == 1.0  # union excludes the 2 predicted pixels on void

    # A spurious prediction is no false positive if more than half of it lies on void.
    truth = TRUTH.copy()
    truth[0, 4:8] = 0
    for columns, expected_fp in ((slice(4, 8), 0), (slice(2, 7), 0), (slice(2, 6), 1)):  # 4/4, 3/5, 2/4 on void
        spurious = (0, columns)
        prediction = TRUTH.copy()
        prediction[spurious] = 24009
        pq = PanopticQuality(CATEGORIES)
        pq.add(prediction, truth)
        assert pq.compute()["per_class"][PERSON]["fp"] == expected_fp


def test_unknown_categories_are_void_in_truth_and_ignored_in_prediction():
    truth = TRUTH.copy()
    truth[0, :] = 11000  # building: not evaluated, so void
    prediction = TRUTH.copy()
    prediction[3, :2] = 33001  # a bicycle: not evaluated, ignored
    pq = PanopticQuality(CATEGORIES)
    pq.add(prediction, truth)
    result = pq.compute()
    assert set(result["per_class"]) == {ROAD, PERSON, CAR}
    # 12 true road pixels (rows 1-3), 10 of them predicted road (the bicycle takes 2); the 8 road
    # pixels predicted on the void row are not in the union: IoU 10 / (12 + 18 - 8 - 10).
    assert result["per_class"][ROAD]["sq"] == pytest.approx(10 / 12)
    assert result["all"]["n"] == 3


def test_crowd_regions():
    truth = scene_map(
        [
            "........",
            ".aaa.ccc",
            ".aaa.ccc",
            "........",
        ],
        {".": 7000, "a": 26001, "c": 26005},
    )
    prediction = truth.copy()
    prediction[truth == 26005] = 26007  # a car predicted exactly on the crowd region
    pq = PanopticQuality(CATEGORIES)
    pq.add(prediction, truth, truth_crowd=[26005])
    car = pq.compute()["per_class"][CAR]
    assert (car["tp"], car["fp"], car["fn"]) == (1, 0, 0)  # crowd: neither matched, nor FN, nor FP

    prediction[truth == 26005] = 24007  # a person on a car crowd region is a false positive
    pq.reset()
    pq.add(prediction, truth, truth_crowd=[26005])
    result = pq.compute()
    assert result["per_class"][PERSON]["fp"] == 1 and result["per_class"][CAR]["fn"] == 0

    pq.reset()
    pq.add(prediction, truth)  # without the crowd flag the car is missed
    assert pq.compute()["per_class"][CAR]["fn"] == 1


def test_absent_categories_are_left_out_and_empty_evaluator():
    pq = PanopticQuality({**CATEGORIES, 27: True})
    with pytest.raises(ValueError, match="no images"):
        pq.compute()
    truth = np.full((4, 4), 7000)
    pq.add(truth, truth)
    result = pq.compute()
    assert math.isnan(result["per_class"][27]["pq"]) and result["per_class"][27]["tp"] == 0
    assert result["all"]["n"] == 1 and result["all"]["pq"] == 1.0
    assert result["things"]["n"] == 0 and math.isnan(result["things"]["pq"])
    with pytest.raises(ValueError):
        pq.add(truth, truth[:2])


# Parity with cityscapesscripts -----------------------------------------------------------------------


def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        mask = mask & shift(mask, 1, 0) & shift(mask, -1, 0) & shift(mask, 0, 1) & shift(mask, 0, -1)
    return mask


def perturbed_scene(seed: int):
    """Truth from the synthetic generator with a void region and a crowd segment; a prediction that
    shifts, erodes, relabels, drops and invents segments."""
    rng = np.random.default_rng(seed)
    scene = generate_scene(seed, 320, 180)
    truth = scene.panoptic.astype(np.int64)
    h, w = truth.shape
    prediction = truth.copy()
    things = [s.id for s in scene.segments if s.is_thing]
    stuff = [s.id for s in scene.segments if not s.is_thing]
    rng.shuffle(things)
    background = stuff[0]
    for k, segment_id in enumerate(things):
        mask = truth == segment_id
        action = k % 5
        if action == 0:  # shifted by a few pixels
            prediction[mask] = background
            prediction[shift(mask, int(rng.integers(-4, 5)), int(rng.integers(-4, 5)))] = segment_id
        elif action == 1:  # eroded, the border predicted void or as the background
            prediction[mask & ~erode(mask, int(rng.integers(1, 3)))] = 0 if rng.random() < 0.5 else background
        elif action == 2 and k < 5:  # relabelled to another thing category
            category = segment_id // 1000
            prediction[mask] = (27 if category != 27 else 26) * 1000 + 50 + k
        elif action == 3 and k < 5:  # dropped
            prediction[mask] = background
    # Stuff: part of one stuff class is taken over by another.
    if len(stuff) > 2:
        mask = truth == stuff[1]
        rows = np.flatnonzero(mask.any(1))
        prediction[mask & (np.arange(h)[:, None] < rows[len(rows) // 2])] = stuff[2]
    # A spurious person and a void region of the truth, with a prediction mostly on it.
    y, x = int(rng.integers(20, 140)), int(rng.integers(20, 280))
    prediction[y : y + 25, x : x + 10] = 24077
    truth[150:180, 0:60] = 0
    prediction[150:175, 5:20] = 24078
    # One truth thing made crowd, with a prediction of its category on it.
    crowd = [int(things[-1])] if things else []
    if crowd:
        mask = truth == crowd[0]
        prediction[mask] = (crowd[0] // 1000) * 1000 + 90
    return truth, prediction, crowd


def segments_info(panoptic: np.ndarray, crowd=()):
    info = []
    for segment_id in np.unique(panoptic):
        if segment_id == 0:
            continue
        ys, xs = np.nonzero(panoptic == segment_id)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        info.append(
            {"id": int(segment_id), "category_id": int(segment_id // 1000), "iscrowd": int(segment_id in crowd), "area": int(len(xs)), "bbox": box}
        )
    return info


def write_png(path, panoptic: np.ndarray) -> None:
    rgb = np.stack([panoptic % 256, panoptic // 256 % 256, panoptic // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def test_parity_with_cityscapesscripts(tmp_path, monkeypatch):
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as reference

    categories = [{"id": c.id, "name": c.name, "isthing": int(c.is_thing)} for c in CITYSCAPES.classes]
    gt_json = {"images": [], "annotations": [], "categories": categories}
    pred_json = {"images": [], "annotations": [], "categories": categories}
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    pq = PanopticQuality({c.id: c.is_thing for c in CITYSCAPES.classes})
    for seed in (1, 2, 3):
        truth, prediction, crowd = perturbed_scene(seed)
        pq.add(prediction, truth, truth_crowd=crowd)
        name = f"city_{seed:06d}_000019"
        write_png(tmp_path / "gt" / f"{name}.png", truth)
        write_png(tmp_path / "pred" / f"{name}.png", prediction)
        for document, panoptic, flagged in ((gt_json, truth, crowd), (pred_json, prediction, ())):
            document["images"].append({"id": name, "file_name": f"{name}.png", "width": 320, "height": 180})
            document["annotations"].append({"image_id": name, "file_name": f"{name}.png", "segments_info": segments_info(panoptic, flagged)})
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    (tmp_path / "pred.json").write_text(json.dumps(pred_json))

    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 2)  # it starts one process per core
    with contextlib.redirect_stdout(io.StringIO()):
        expected = reference.evaluatePanoptic(
            str(tmp_path / "gt.json"), str(tmp_path / "gt"), str(tmp_path / "pred.json"), str(tmp_path / "pred"), str(tmp_path / "result.json")
        )
    result = pq.compute()

    for ours, theirs in (("all", "All"), ("things", "Things"), ("stuff", "Stuff")):
        for key in ("pq", "sq", "rq"):
            assert result[ours][key] == pytest.approx(expected[theirs][key], abs=1e-6), (ours, key)
        assert result[ours]["n"] == expected[theirs]["n"]
    for category, values in expected["per_class"].items():
        ours = result["per_class"][category]
        if ours["tp"] + ours["fp"] + ours["fn"] == 0:
            assert values == {"pq": 0.0, "sq": 0.0, "rq": 0.0} and math.isnan(ours["pq"])
            continue
        for key in ("pq", "sq", "rq"):
            assert ours[key] == pytest.approx(values[key], abs=1e-6), (category, key)
    # The scenes exercise what they should: errors of every kind, in things and stuff.
    counts = {key: sum(v[key] for v in result["per_class"].values()) for key in ("tp", "fp", "fn")}
    assert all(count > 0 for count in counts.values()), counts
    assert 0.3 < result["all"]["pq"] < 0.95
    assert result["things"]["n"] >= 2 and result["stuff"]["n"] >= 4
