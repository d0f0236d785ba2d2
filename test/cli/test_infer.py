"""``infer``: the files it writes, what Cityscapes' tools read of them, bad frames skipped."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from panoptic_perception.backends import save_checkpoint
from panoptic_perception.cli import main


def test_infer_writes_masks_overlay_and_json_and_skips_a_bad_frame(tmp_path, small_weights, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, size in enumerate([(160, 90), (200, 120)]):
        cv2.imwrite(str(frames / f"f{i}.jpg"), np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), np.uint8))
    (frames / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    status = main(["-q", "infer", "--weights", small_weights, str(frames), "--output", str(out)])
    assert status == 1, "a skipped frame makes the exit status 1"
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "corrupt.jpg" in captured.err
    for stem, (w, h) in (("f0", (160, 90)), ("f1", (200, 120))):
        drivable = cv2.imread(str(out / f"{stem}_drivable.png"), cv2.IMREAD_UNCHANGED)
        lane = cv2.imread(str(out / f"{stem}_lane.png"), cv2.IMREAD_UNCHANGED)
        assert drivable.shape == lane.shape == (h, w)
        assert set(np.unique(drivable)) <= {0, 255} and set(np.unique(lane)) <= {0, 255}
        assert cv2.imread(str(out / f"{stem}_overlay.jpg")).shape == (h, w, 3)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["backend"] == "twinlitenet" and record["image_size"] == [w, h]
        assert record["weights"]["sha256"] and len(record["weights"]["sha256"]) == 64
        assert record["timings"]["inference_ms"] > 0 and record["detections"] is None
        assert record["drivable_pixels"] == int((drivable > 0).sum())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 2 and summary["failed"][0]["source"].endswith("corrupt.jpg")


def test_infer_with_yolopv2_writes_detections(tmp_path, yolopv2_small_checkpoint, capsys):
    from panoptic_perception.data.synthetic import generate_scene

    path, _ = yolopv2_small_checkpoint
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), generate_scene(2, 640, 360).image)
    out = tmp_path / "out"
    assert main(["-q", "infer", "--backend", "yolopv2", "--weights", path, str(image), "--output", str(out)]) == 0
    record = json.loads((out / "frame.json").read_text())
    assert record["backend"] == "yolopv2" and len(record["detections"]) > 0
    for detection in record["detections"]:
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
        assert detection["score"] > 0.3 and detection["class_name"] == "vehicle" and detection["class_id"] == 0
    assert cv2.imread(str(out / "frame_drivable.png"), cv2.IMREAD_UNCHANGED).shape == (360, 640)
    assert cv2.imread(str(out / "frame_overlay.jpg")).shape == (360, 640, 3)


def test_infer_records_the_backend_options_it_ran_with(tmp_path):
    from panoptic_perception.data.synthetic import generate_scene

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), generate_scene(2, 160, 96).image)
    argv = ["-q", "infer", "--backend", "cross_cooperative", str(image), "--output", str(tmp_path / "out"),
            "--options", "output=top,output_stride=8", "--input-size", "160x96"]
    assert main(argv) == 0
    for name in ("frame.json", "summary.json"):
        record = json.loads((tmp_path / "out" / name).read_text())
        assert (record["config"]["output"], record["config"]["output_stride"]) == ("top", 8), name
        assert record["input_size"] == [160, 96] and "input_width" not in record["config"], name


@pytest.fixture(scope="module")
def fusion_weights(tmp_path_factory):
    """A small random fusion_panoptic checkpoint (256x160 input)."""
    from panoptic_perception.models.fusion_panoptic import FusionPanopticConfig, FusionPanopticNetwork

    torch.manual_seed(0)
    config = dict(width=0.25, norm="batch_norm", fpn_channels=32, representation_size=64, mask_channels=32,
                  semantic_channels=32, group_norm_groups=8, input_width=256, input_height=160)
    return str(save_checkpoint(tmp_path_factory.mktemp("weights") / "fp.pth", "fusion_panoptic",
                               FusionPanopticNetwork(FusionPanopticConfig(**config)).state_dict(), config))


def test_infer_with_fusion_panoptic_writes_semantic_and_cityscapes_panoptic_files(tmp_path, fusion_weights, capsys):
    from panoptic_perception.core.labels import CITYSCAPES
    from panoptic_perception.data.cityscapes import panoptic_from_png, rgb_to_id
    from panoptic_perception.data.synthetic import generate_scene

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), generate_scene(5, 320, 180).image)
    out = tmp_path / "out"
    argv = ["-q", "infer", "--backend", "fusion_panoptic", "--weights", fusion_weights, str(image), "--output", str(out),
            "--score-threshold", "0"]
    assert main(argv) == 0
    semantic = cv2.imread(str(out / "frame_semantic.png"), cv2.IMREAD_UNCHANGED)
    assert semantic.shape == (180, 320) and set(np.unique(semantic).tolist()) <= set(CITYSCAPES.ids.tolist())
    assert cv2.imread(str(out / "frame_semantic_color.png")).shape == (180, 320, 3)
    document = json.loads((out / "panoptic.json").read_text())
    (annotation,) = document["annotations"]
    assert annotation["file_name"] == "frame_panoptic.png" and len(document["categories"]) == 19
    png = cv2.imread(str(out / "frame_panoptic.png"), cv2.IMREAD_COLOR)
    ids = rgb_to_id(png)
    assert sorted(np.unique(ids[ids > 0]).tolist()) == sorted(s["id"] for s in annotation["segments_info"])
    for segment in annotation["segments_info"]:  # stuff ids are the label id, things label id * 1000 + k
        assert segment["area"] == int((ids == segment["id"]).sum())
        is_thing = segment["category_id"] in CITYSCAPES.thing_ids
        assert (segment["id"] // 1000 == segment["category_id"]) if is_thing else segment["id"] == segment["category_id"]
    panoptic, _ = panoptic_from_png(ids, annotation["segments_info"], {c.id: c.id for c in CITYSCAPES.classes})
    assert np.array_equal(panoptic // 1000, ids // np.where(ids >= 1000, 1000, 1)), "the classes read back"


def synthetic_cityscapes(root, count: int = 2):
    """A Cityscapes folder (val split, city ``synth``) of synthetic scenes: images, labelIds, instanceIds,
    and the panoptic ground truth made by cityscapesscripts itself, with label ids and with train ids."""
    import contextlib
    import io

    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    from panoptic_perception.data.synthetic import generate_scene

    for folder in ("leftImg8bit", "gtFine"):
        (root / folder / "val" / "synth").mkdir(parents=True)
    for index in range(count):
        scene = generate_scene(100 + index, 320, 180)
        name = f"synth_000000_{index:06d}"
        cv2.imwrite(str(root / "leftImg8bit" / "val" / "synth" / f"{name}_leftImg8bit.png"), scene.image)
        classes, instances = scene.panoptic // 1000, scene.panoptic % 1000
        # instanceIds: the label id for stuff, label id * 1000 + k (from 0) for each thing instance
        instance_ids = np.where(instances > 0, classes * 1000 + instances - 1, classes).astype(np.uint16)
        cv2.imwrite(str(root / "gtFine" / "val" / "synth" / f"{name}_gtFine_instanceIds.png"), instance_ids)
        cv2.imwrite(str(root / "gtFine" / "val" / "synth" / f"{name}_gtFine_labelIds.png"), classes.astype(np.uint8))
    with contextlib.redirect_stdout(io.StringIO()):
        for train_ids in (False, True):
            convert2panoptic(str(root / "gtFine"), useTrainId=train_ids, setNames=["val"])
    return root


def official_panoptic_quality(gt_json, gt_folder, prediction_folder, monkeypatch):
    import contextlib
    import io
    import multiprocessing

    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 2)  # it starts one process per core
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluatePanoptic(str(gt_json), str(gt_folder), str(prediction_folder / "panoptic.json"),
                                str(prediction_folder), str(prediction_folder / "pq.json"))


def test_infer_on_cityscapes_images_writes_what_cityscapesscripts_evaluates(tmp_path, monkeypatch):
    """cityscapesscripts' panoptic and pixel-level evaluations of infer's files give evaluate's numbers."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as pixel_level

    root = synthetic_cityscapes(tmp_path / "cityscapes")
    names = ["synth_000000_000000", "synth_000000_000001"]
    out = tmp_path / "out"
    assert main(["-q", "infer", "--backend", "fusion_panoptic", str(root / "leftImg8bit" / "val"), "--output", str(out)]) == 0
    assert [a["image_id"] for a in json.loads((out / "panoptic.json").read_text())["annotations"]] == names
    assert all((out / f"{name}_panoptic.png").is_file() and (out / f"{name}.json").is_file() for name in names)
    assert sorted(p.name for p in (out / "cityscapes_semantic").iterdir()) == [f"{name}.png" for name in names]
    assert main(["-q", "evaluate", "--backend", "fusion_panoptic", "--data", str(root), "--output", str(tmp_path / "r")]) == 0
    ours = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"][0]["summary"]

    gt = root / "gtFine"
    theirs = official_panoptic_quality(gt / "cityscapes_panoptic_val.json", gt / "cityscapes_panoptic_val", out, monkeypatch)
    assert 0.3 < ours["panoptic"]["all"]["pq"] < 1, "a real score: the bundled weights on synthetic scenes"
    for key in ("pq", "sq", "rq"):
        assert theirs["All"][key] == pytest.approx(ours["panoptic"]["all"][key], abs=1e-6), key

    # The pixel-level evaluation takes the one prediction <city>_<seq>_<frame>*.png under CITYSCAPES_RESULTS.
    monkeypatch.setattr(pixel_level.args, "predictionPath", str(out / "cityscapes_semantic"))
    monkeypatch.setattr(pixel_level.args, "predictionWalk", None)
    monkeypatch.setattr(pixel_level.args, "quiet", True)
    monkeypatch.setattr(pixel_level.args, "JSONOutput", False)
    monkeypatch.setattr(pixel_level.args, "evalInstLevelScore", False)  # its instance part calls np.in1d, gone in numpy 2
    truth = sorted(str(p) for p in gt.glob("val/*/*_gtFine_labelIds.png"))
    predictions = [pixel_level.getPrediction(pixel_level.args, path) for path in truth]
    assert predictions == [str(out / "cityscapes_semantic" / f"{name}.png") for name in names]
    scores = pixel_level.evaluateImgLists(predictions, truth, pixel_level.args)
    assert scores["averageScoreClasses"] == pytest.approx(ours["semantic"]["miou"], abs=1e-6)

    # Train ids, for ground truth made with createPanopticImgs --use-train-id (and for training code).
    from panoptic_perception.core.labels import CITYSCAPES_TRAIN_IDS

    train = tmp_path / "train"
    assert main(["-q", "infer", "--backend", "fusion_panoptic", "--class-ids", "train", str(root / "leftImg8bit" / "val"),
                 "--output", str(train)]) == 0
    for name in names:
        label_ids = cv2.imread(str(out / f"{name}_semantic.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(cv2.imread(str(train / f"{name}_semantic.png"), cv2.IMREAD_UNCHANGED), CITYSCAPES_TRAIN_IDS[label_ids])
    assert {c["id"] for c in json.loads((train / "panoptic.json").read_text())["categories"]} == set(range(19))
    theirs = official_panoptic_quality(gt / "cityscapes_panoptic_val_trainId.json", gt / "cityscapes_panoptic_val_trainId",
                                       train, monkeypatch)
    assert theirs["All"]["pq"] == pytest.approx(ours["panoptic"]["all"]["pq"], abs=1e-6)


def test_train_ids_are_those_of_the_cityscapes_classes(tmp_path, small_weights, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((48, 64, 3), np.uint8))
    assert main(["-q", "infer", "--weights", small_weights, "--class-ids", "train", str(image), "--output", str(tmp_path / "o")]) == 2
    assert "--class-ids train: train ids are those of the Cityscapes classes; twinlitenet outputs driving_masks classes" in (
        capsys.readouterr().err)


def test_infer_reports_a_frame_whose_fusion_fails_and_goes_on(tmp_path, fusion_weights, monkeypatch, capsys):
    from panoptic_perception.backends import fusion_panoptic
    from panoptic_perception.data.synthetic import generate_scene

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), generate_scene(i, 160, 96).image)
    calls = []

    def fuse(*args, **kwargs):  # infer calls the backend once per frame: the second call is f1's
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("fusion exploded")
        return original(*args, **kwargs)

    original = fusion_panoptic.fuse
    monkeypatch.setattr(fusion_panoptic, "fuse", fuse)
    out = tmp_path / "out"
    assert main(["-q", "infer", "--backend", "fusion_panoptic", "--weights", fusion_weights, str(frames),
                 "--output", str(out)]) == 1
    assert len(calls) == 3, "the frame after the failed one ran"
    captured = capsys.readouterr()
    assert captured.err.count("skipped") == 1 and "skipped f1 (backend): RuntimeError: fusion exploded" in captured.err
    assert "2 frames written" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 2
    assert summary["failed"] == [{"frame": "f1", "stage": "backend", "error": "RuntimeError: fusion exploded",
                                  "source": str(frames / "f1.png")}]
    assert [a["image_id"] for a in json.loads((out / "panoptic.json").read_text())["annotations"]] == ["f0", "f2"]
    assert sorted(p.name for p in out.glob("f1*")) == []
    assert (out / "f2_panoptic.png").is_file() and (out / "f2.json").is_file()


def test_infer_leaves_no_partial_outputs_of_a_frame_that_cannot_be_written(tmp_path, small_weights, monkeypatch, capsys):
    from panoptic_perception.cli import infer

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    imwrite = cv2.imwrite
    # OpenCV reports a failed write (a full disk, say) by returning False, after f1's masks were written.
    monkeypatch.setattr(infer.cv2, "imwrite", lambda path, image: False if path.endswith("f1_overlay.jpg") else imwrite(path, image))
    out = tmp_path / "out"
    assert main(["-q", "infer", "--weights", small_weights, str(frames), "--output", str(out)]) == 1
    assert f"skipped f1 (writing): OSError: cannot write {out / 'f1_overlay.jpg'}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "f0.json", "f0_drivable.png", "f0_lane.png", "f0_overlay.jpg",
        "f2.json", "f2_drivable.png", "f2_lane.png", "f2_overlay.jpg", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 2 and [(f["frame"], f["stage"]) for f in summary["failed"]] == [("f1", "writing")]


def test_infer_refuses_inputs_repeating_a_cityscapes_frame_before_writing_anything(tmp_path, fusion_weights, capsys):
    """The second would be written as cityscapes_semantic/<id>_2.png, which cityscapesscripts also takes for <id>."""
    (tmp_path / "sub").mkdir()
    inputs = [tmp_path / "aachen_000000_000019_leftImg8bit.png", tmp_path / "sub" / "aachen_000000_000019_leftImg8bit.png"]
    for path in inputs:
        cv2.imwrite(str(path), np.zeros((90, 160, 3), np.uint8))
    argv = ["-q", "infer", "--backend", "fusion_panoptic", "--weights", fusion_weights, *map(str, inputs),
            "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"panoptic-perception: error: 2 inputs are Cityscapes frame aachen_000000_000019 "
                                       f"({inputs[0]}, {inputs[1]}): Cityscapes' scripts take one file per frame, give "
                                       f"each frame once\n")
    assert not (tmp_path / "out").exists()


def test_infer_with_a_camera_calibration_writes_the_drivable_area_on_the_ground(tmp_path, capsys):
    from panoptic_perception.core.ground import GroundGrid
    from panoptic_perception.data.synthetic import generate_scene

    scene = generate_scene(5_000_003, 640, 360)
    cv2.imwrite(str(tmp_path / "frame.png"), scene.image)
    (tmp_path / "camera.yaml").write_text(scene.camera.camera_calibration_yaml("front"))
    small = generate_scene(5_000_003, 320, 180)
    cv2.imwrite(str(tmp_path / "small.png"), small.image)  # not the calibrated size: no ground output, said once
    mount = f"0,0,{scene.camera.height_above_ground},0,0,0"
    argv = ["-q", "infer", str(tmp_path / "frame.png"), str(tmp_path / "small.png"), "--camera-info",
            str(tmp_path / "camera.yaml"), "--mount", mount, "--output", str(tmp_path / "out")]
    assert main(argv) == 0
    assert capsys.readouterr().err.count("no ground output: the calibration describes 640x360 images") == 1
    assert not (tmp_path / "out" / "small_ground.png").exists() and (tmp_path / "out" / "small_drivable.png").exists()
    picture = cv2.imread(str(tmp_path / "out" / "frame_ground.png"), cv2.IMREAD_UNCHANGED)
    grid = GroundGrid()
    assert picture.shape == grid.shape[::-1]
    free = (picture == 255)[::-1, ::-1].T  # back to the grid's rows (y) and columns (x)
    truth = scene.ground_road.mask(grid.resolution, (grid.x_min, grid.x_max), (grid.y_min, grid.y_max))
    known = (picture != 128)[::-1, ::-1].T
    iou = (free & truth & known).sum() / ((free | truth) & known).sum()
    assert iou > 0.8, iou  # the bundled weights' prediction, not the truth


def test_infer_refuses_a_calibration_that_is_not_one(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "frame.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "camera.yaml").write_text("image_width: 64\nimage_height: 48\n")
    argv = ["-q", "infer", str(tmp_path / "frame.png"), "--camera-info", str(tmp_path / "camera.yaml"),
            "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "is not a camera_calibration file: KeyError: 'camera_matrix'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_infer_refuses_a_mount_without_a_calibration_and_a_camera_on_the_ground_in_one_line(tmp_path, capsys):
    from panoptic_perception.data.synthetic import generate_scene

    scene = generate_scene(5_000_003, 64, 48)
    cv2.imwrite(str(tmp_path / "frame.png"), scene.image)
    (tmp_path / "camera.yaml").write_text(scene.camera.camera_calibration_yaml("front"))
    for extra, message in ((["--mount", "0,0,1.5,0,0,0"],
                            "--mount places the camera's frames on the ground, which needs its --camera-info YAML"),
                           (["--mount", "0,0,0,0,0,0", "--camera-info", str(tmp_path / "camera.yaml")],
                            "the camera is 0 m above the ground plane: it must be above it (a mount or transform "
                            "without the camera's height, or ground_height above it?)")):
        argv = ["-q", "infer", str(tmp_path / "frame.png"), *extra, "--output", str(tmp_path / "out")]
        assert main(argv) == 2
        assert capsys.readouterr().err == f"panoptic-perception: error: {message}\n"
        assert not (tmp_path / "out").exists()


def test_infer_int8_without_a_runtime_that_runs_it_is_refused_not_run_in_float(tmp_path, onnx_cache, capsys):
    """`infer --precision int8 --calibration DATA` without --runtime onnxruntime: the Python API refuses
    runtime torch with precision int8; the command line dropped --precision and --calibration and ran fp32
    eager torch without a word (found in review)."""
    from panoptic_perception.data.synthetic import generate_scene

    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), generate_scene(5_000_000, 320, 180).image)
    status = main(["-q", "infer", "--input-size", "160x96", "--precision", "int8", "--calibration", "synthetic:2@320x180+0",
                   str(frame), "--output", str(tmp_path / "out")])
    assert status == 2, "precision int8 asked for, a float32 torch network run"
    assert capsys.readouterr().err == ("panoptic-perception: error: --precision int8 runs in onnxruntime or tensorrt, not "
                                       "torch: add --runtime onnxruntime\n")
