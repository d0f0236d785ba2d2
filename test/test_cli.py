"""The command line: outputs, errors (one clear line, non-zero exit), bad frames skipped."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from panoptic_perception.backends import save_checkpoint
from panoptic_perception.cli import main
from panoptic_perception.models.twinlitenet import TwinLiteNet


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """A TwinLiteNet checkpoint with a small network input, so CLI tests run fast."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    return str(save_checkpoint(path, "twinlitenet", TwinLiteNet().state_dict(), {"input_width": 96, "input_height": 56}))


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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["infer", "/nonexistent/x.jpg", "--output", "OUT"], "input not found: /nonexistent/x.jpg"),
        (["infer", "--backend", "nope", "IMG", "--output", "OUT"], "unknown backend 'nope'"),
        (["infer", "--weights", "/nonexistent.pth", "IMG", "--output", "OUT"], "weights file not found"),
        (["train", "--config", "/nonexistent.yaml"], "config file not found"),
        (["train", "--config", "a.yaml", "--config", "b.yaml", "--output-dir", "x"], "--output-dir applies to one --config"),
    ],
)
def test_errors_print_one_line_and_exit_2(tmp_path, capsys, argv, message):
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    argv = [str(image) if a == "IMG" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("panoptic-perception: error:") and message in err[-1]


def test_benchmark_json_reports_both_paths_and_their_ratio(small_weights, capsys):
    assert main(["benchmark", "--weights", small_weights, "--runs", "3", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # a camera frame by default, whatever the network's input size
    assert report["input_size"] == [96, 56] and report["image_size"] == [1280, 720] and report["runs"] == 3
    for path in ("fast", "plain"):
        stats = report["paths"][path]
        assert stats["total_ms"]["median"] >= stats["inference_ms"]["median"] > 0
        assert stats["total_ms"]["p90"] >= stats["total_ms"]["median"]
        assert stats["fps"]["median"] == pytest.approx(1000 / stats["total_ms"]["median"])
        assert stats["postprocess_ratio"] == pytest.approx(stats["postprocess_ms"]["median"] / stats["inference_ms"]["median"])
    assert report["speedup_total"] == pytest.approx(
        report["paths"]["plain"]["total_ms"]["median"] / report["paths"]["fast"]["total_ms"]["median"]
    )


def test_benchmark_table(small_weights, capsys):
    argv = ["benchmark", "--weights", small_weights, "--runs", "2", "--warmup", "0", "--paths", "fast", "--input-size", "64x48",
            "--size", "200x100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "network input 64x48, image 200x100" in out and "fast   inference" in out and "speed-up" not in out
    assert "fast: post-processing / network (medians) " in out


def test_benchmark_resizes_the_given_image_to_the_given_size(small_weights, tmp_path, capsys):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((90, 160, 3), np.uint8))
    argv = ["benchmark", "--weights", small_weights, "--runs", "1", "--warmup", "0", "--paths", "fast", "--json"]
    assert main([*argv, "--image", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == [160, 90]
    assert main([*argv, "--image", str(image), "--size", "320x180"]) == 0
    assert json.loads(capsys.readouterr().out)["image_size"] == [320, 180]


def test_backends_lists_capabilities(capsys):
    assert main(["backends"]) == 0
    assert "twinlitenet" in capsys.readouterr().out


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "panoptic_perception.cli", "backends"], capture_output=True, text=True, check=True)
    assert "drivable_area, lane_lines" in out.stdout


@pytest.mark.parametrize("argv", [["-q", "backends"], ["backends", "-q"], ["backends"]])
def test_global_options_go_before_or_after_the_command(argv):
    from panoptic_perception.cli import parse_args

    args = parse_args(argv)
    assert args.quiet == ("-q" in argv) and args.verbose is False


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
    from panoptic_perception import cli

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    imwrite = cv2.imwrite
    # OpenCV reports a failed write (a full disk, say) by returning False, after f1's masks were written.
    monkeypatch.setattr(cli.cv2, "imwrite", lambda path, image: False if path.endswith("f1_overlay.jpg") else imwrite(path, image))
    out = tmp_path / "out"
    assert main(["-q", "infer", "--weights", small_weights, str(frames), "--output", str(out)]) == 1
    assert f"skipped f1 (writing): OSError: cannot write {out / 'f1_overlay.jpg'}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "f0.json", "f0_drivable.png", "f0_lane.png", "f0_overlay.jpg",
        "f2.json", "f2_drivable.png", "f2_lane.png", "f2_overlay.jpg", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processed"] == 2 and [(f["frame"], f["stage"]) for f in summary["failed"]] == [("f1", "writing")]


def test_benchmark_reports_parameters_and_flops_of_a_random_variant(capsys):
    argv = ["benchmark", "--backend", "yolopv2", "--random-weights", "--option", "width=0.25", "--option", "depth=0.33",
            "--input-size", "320x192", "--size", "320x180", "--runs", "2", "--warmup", "1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"]["source"] == "random" and report["input_size"] == [320, 192]
    fast, plain = report["paths"]["fast"], report["paths"]["plain"]
    assert 2.0e6 < fast["parameters"] < plain["parameters"] < 2.5e6, "folding removes BatchNorm parameters"
    assert 1.0 < fast["gflops"] < 3.0 and plain["gflops"] >= fast["gflops"]


@pytest.mark.parametrize("backend", ["fusion_panoptic", "cyclenet"])
def test_benchmark_runs_the_bundled_weights_of_the_new_backends(backend, capsys):
    argv = ["benchmark", "--backend", backend, "--runs", "1", "--warmup", "0", "--paths", "fast", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    fast = report["paths"]["fast"]
    assert report["weights"]["source"] == "bundled" and fast["parameters"] > 5e5 and fast["gflops"] > 0.1


def test_benchmark_reports_nms_candidates_next_to_the_network_time(yolopv2_small_checkpoint, capsys):
    """The randomized small checkpoint at 640x384: every one of the 15,120 anchors is a candidate."""
    path, _ = yolopv2_small_checkpoint
    argv = ["benchmark", "--backend", "yolopv2", "--weights", path, "--input-size", "640x384", "--runs", "2", "--warmup", "1",
            "--paths", "fast"]
    assert main([*argv, "--json"]) == 0
    fast = json.loads(capsys.readouterr().out)["paths"]["fast"]
    assert fast["candidates"] == {"median": 15120.0, "max": 15120.0}
    assert fast["postprocess_ms"]["median"] > 0
    assert main([*argv, "--score-threshold", "0.99", "--max-detections", "5"]) == 0
    out = capsys.readouterr().out
    assert "ms median for 0 NMS candidates (max 0), next to" in out  # nothing passes a 0.99 score


def test_threshold_options_are_checked(capsys):
    assert main(["benchmark", "--backend", "yolopv2", "--random-weights", "--score-threshold", "1.5"]) == 2
    assert "score threshold must be in [0, 1]" in capsys.readouterr().err


def test_option_values_of_the_wrong_type_are_named(capsys):
    assert main(["benchmark", "--backend", "yolopv2", "--random-weights", "--option", "width=abc"]) == 2
    assert "YOLOPv2Config option width must be float, got 'abc'" in capsys.readouterr().err
    assert main(["benchmark", "--backend", "yolopv2", "--random-weights", "--option", "depth=true"]) == 2
    assert "option depth must be float, got True" in capsys.readouterr().err


def test_options_must_be_key_value(capsys):
    assert main(["benchmark", "--backend", "yolopv2", "--random-weights", "--option", "width"]) == 2
    assert "backend options are KEY=VALUE" in capsys.readouterr().err


def test_evaluate_two_weights_side_by_side(tmp_path, small_weights, capsys):
    out = tmp_path / "report"
    argv = ["-q", "evaluate", "--weights", "-", "--weights", small_weights, "--data", "synthetic:2@160x96", "--output", str(out)]
    assert main(argv) == 0
    text = (out / "report.md").read_text()
    assert "| metric | twinlitenet_bundled | twinlitenet_tiny |" in text
    metrics = json.loads((out / "metrics.json").read_text())
    bundled, tiny = (run["summary"]["driving"]["drivable_miou"] for run in metrics["runs"])
    assert bundled > 0.8 and bundled > tiny, "trained weights beat random ones"


def test_evaluate_applies_the_given_detection_thresholds_and_records_them(tmp_path, yolopv2_small_checkpoint):
    path, _ = yolopv2_small_checkpoint
    reports = {}
    for name, thresholds in (("default", []), ("protocol", ["--score-threshold", "0.001", "--iou-threshold", "0.6",
                                                            "--max-detections", "7"])):
        argv = ["-q", "evaluate", "--backend", "yolopv2", "--weights", path, "--data", "synthetic:1@160x96",
                "--output", str(tmp_path / name), *thresholds]
        assert main(argv) == 0
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())["runs"][0]
    assert reports["default"]["backend"]["thresholds"]["score"] == 0.3
    assert {k: reports["protocol"]["backend"]["thresholds"][k] for k in ("score", "iou", "max_detections")} == {
        "score": 0.001, "iou": 0.6, "max_detections": 7}
    assert reports["protocol"]["frames"][0]["detections"] == 7, "a random detector has thousands of candidates above 0.001"
    assert "thresholds: score 0.001, iou 0.6, max_detections 7, mask 0.5" in (tmp_path / "protocol" / "report.md").read_text()


def test_evaluate_names_runs_of_weights_with_the_same_file_name_by_their_folders(tmp_path, small_weights):
    for run in ("stage1", "stage2"):
        (tmp_path / run).mkdir()
        shutil.copy(small_weights, tmp_path / run / "best.pth")
    argv = ["-q", "evaluate", "--weights", str(tmp_path / "stage1" / "best.pth"), "--weights",
            str(tmp_path / "stage2" / "best.pth"), "--data", "synthetic:1@160x96", "--output", str(tmp_path / "report")]
    assert main(argv) == 0
    assert "| metric | twinlitenet_stage1-best | twinlitenet_stage2-best |" in (tmp_path / "report" / "report.md").read_text()


def test_evaluate_skips_frames_that_cannot_be_read(tmp_path, small_weights, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "good.png"), np.zeros((48, 64, 3), np.uint8))
    (frames / "bad.jpg").write_bytes(b"not a jpeg")
    assert main(["-q", "evaluate", "--weights", small_weights, "--data", str(frames), "--output", str(tmp_path / "r")]) == 1
    assert "twinlitenet: skipped bad (read): cannot decode image" in capsys.readouterr().err
    run = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"][0]
    assert run["summary"]["frames"] == 1 and run["failed"][0]["frame"] == "bad"


def test_evaluate_reports_a_frame_the_backend_fails_on_and_scores_the_others(tmp_path, small_weights, monkeypatch, capsys):
    from panoptic_perception.backends.twinlitenet import TwinLiteNetBackend
    from panoptic_perception.data.sources import EVALUATION_FIRST_SEED
    from panoptic_perception.data.synthetic import generate_scene

    bad = generate_scene(EVALUATION_FIRST_SEED + 1, 64, 48).image  # the second of synthetic:3@64x48
    call = TwinLiteNetBackend.__call__

    def failing(self, image):
        if np.array_equal(image, bad):
            raise RuntimeError("backend exploded")
        return call(self, image)

    monkeypatch.setattr(TwinLiteNetBackend, "__call__", failing)
    argv = ["-q", "evaluate", "--weights", small_weights, "--data", "synthetic:3@64x48", "--output", str(tmp_path / "r")]
    assert main(argv) == 1
    name = f"synthetic_{EVALUATION_FIRST_SEED + 1}"
    assert capsys.readouterr().err.count(f"skipped {name} (backend): RuntimeError: backend exploded") == 1
    run = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"][0]
    assert [f["frame"] for f in run["frames"]] == [f"synthetic_{EVALUATION_FIRST_SEED}", f"synthetic_{EVALUATION_FIRST_SEED + 2}"]
    assert run["summary"]["frames"] == 2 and run["failed"] == [{"frame": name, "stage": "backend",
                                                                  "error": "RuntimeError: backend exploded"}]
    assert f"- twinlitenet: {name} (backend): RuntimeError: backend exploded" in (tmp_path / "r" / "report.md").read_text()


def test_export_writes_a_checked_onnx_file(tmp_path, small_weights, capsys):
    import onnx

    output = tmp_path / "tiny.onnx"
    assert main(["export", "--weights", small_weights, "--format", "onnx", "--size", "96x56", "--dynamic-batch",
                 "--output", str(output)]) == 0
    assert capsys.readouterr().out.strip() == (f"{output}: twinlitenet network part, ONNX opset 18, input images "
                                               "(N, 3, 56, 96) float32 RGB in [0, 1], dynamic batch; onnx.checker passed")
    model = onnx.load(str(output))
    batch, *rest = model.graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and [d.dim_value for d in rest] == [3, 56, 96]


def test_export_of_a_tensorrt_engine_needs_cuda(small_weights, capsys):
    assert main(["export", "--weights", small_weights, "--format", "tensorrt", "--size", "96x56"]) == 2
    assert "runtime tensorrt needs a CUDA device, got cpu" in capsys.readouterr().err


def test_runtimes_side_by_side_in_benchmark_infer_and_evaluate(tmp_path, small_weights, onnx_cache, capsys):
    argv = ["benchmark", "--weights", small_weights, "--runtime", "torch", "--runtime", "onnxruntime", "--paths", "fast",
            "--runs", "2", "--warmup", "1", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["paths"]) == {"fast/torch", "fast/onnxruntime"}
    ratios = report["runtime_speedup"]["fast/onnxruntime"]
    expected = report["paths"]["fast/torch"]["total_ms"]["median"] / report["paths"]["fast/onnxruntime"]["total_ms"]["median"]
    assert ratios["total"] == pytest.approx(expected) and ratios["inference"] > 0
    assert report["paths"]["fast/onnxruntime"]["gflops"] == report["paths"]["fast/torch"]["gflops"] > 0

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "f0.png"), np.random.default_rng(0).integers(0, 255, (90, 160, 3), np.uint8))
    for runtime in ("torch", "onnxruntime"):
        assert main(["-q", "infer", "--weights", small_weights, "--runtime", runtime, str(frames), "--output",
                     str(tmp_path / runtime)]) == 0
    summary = json.loads((tmp_path / "onnxruntime" / "summary.json").read_text())
    assert summary["runtime"] == "onnxruntime" and summary["onnx"].startswith(str(onnx_cache))
    for mask in ("f0_drivable.png", "f0_lane.png"):
        torch_mask, ort_mask = (cv2.imread(str(tmp_path / r / mask), cv2.IMREAD_UNCHANGED) for r in ("torch", "onnxruntime"))
        assert (torch_mask == ort_mask).mean() >= 0.999

    assert main(["-q", "evaluate", "--weights", small_weights, "--runtime", "onnxruntime", "--data", "synthetic:1@160x96",
                 "--output", str(tmp_path / "report")]) == 0
    (run,) = json.loads((tmp_path / "report" / "metrics.json").read_text())["runs"]
    assert run["summary"]["frames"] == 1 and run["backend"]["runtime"] == "onnxruntime"


def test_train_runs_stages_in_order_and_packs_the_last_one(tmp_path, capsys):
    import yaml

    from panoptic_perception import create_backend
    from panoptic_perception.backends import read_checkpoint

    def stage(name: str, init: str | None) -> str:
        config = {"backend": "twinlitenet", "output_dir": str(tmp_path / name), "epochs": 1, "batch_size": 3,
                  "optimizer": {"name": "adam", "learning_rate": 1.0e-3}, "model": {"input_width": 64, "input_height": 48},
                  "data": {"train": [{"source": "synthetic", "count": 3, "width": 64, "height": 48}],
                           "val": [{"source": "synthetic", "count": 2, "first_seed": 1000000, "width": 64, "height": 48}]}}
        if init:
            config["init_weights"] = init
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    first, second = stage("one", None), stage("two", str(tmp_path / "one" / "best.pth"))
    packed = tmp_path / "shipped.pth"
    assert main(["-q", "train", "--config", first, "--config", second, "--set", "threads=1", "--pack", str(packed)]) == 0
    reports = capsys.readouterr().out
    assert reports.index(first) < reports.index(second), "the stages ran in the order given"
    trained = read_checkpoint(tmp_path / "two" / "best.pth")
    assert trained.metadata["train_config"]["init_weights"] == str(tmp_path / "one" / "best.pth")
    shipped = read_checkpoint(packed)
    assert shipped.metadata["stored_as"] == "float16" and shipped.config == trained.config
    for name, value in trained.state_dict.items():
        if value.is_floating_point():
            assert shipped.state_dict[name].dtype == torch.float16 and torch.equal(shipped.state_dict[name], value.half())
    assert create_backend("twinlitenet", str(packed)).input_size == (64, 48)


def test_train_refuses_too_little_data_and_initial_weights_that_do_not_fit(tmp_path, capsys, yolopv2_small_checkpoint):
    import yaml

    config = {"backend": "twinlitenet", "output_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 4,
              "optimizer": {"name": "adam", "learning_rate": 1.0e-3}, "model": {"input_width": 64, "input_height": 48},
              "data": {"train": [{"source": "synthetic", "count": 3, "width": 64, "height": 48}]}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["-q", "train", "--config", str(path), "--set", "threads=1"]) == 2
    assert "the training data has 3 samples, fewer than batch_size 4" in capsys.readouterr().err
    argv = ["-q", "train", "--config", str(path), "--set", "threads=1", "--set", "batch_size=3",
            "--set", f"init_weights={yolopv2_small_checkpoint[0]}"]
    assert main(argv) == 2
    assert "no tensor fits this twinlitenet model" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["synthetic:abc", "synthetic:2@640", "synthetic:0", "synthetic:2@0x10", "synthetic:2+-1",
                                  "synthetic:2+7@64x48"])
def test_evaluate_rejects_a_malformed_synthetic_spec(tmp_path, spec, capsys):
    assert main(["-q", "evaluate", "--data", spec, "--output", str(tmp_path / "r")]) == 2
    assert "synthetic data is synthetic:N[@WxH][+SEED] with positive N, W and H" in capsys.readouterr().err


@pytest.mark.parametrize("spec, seeds", [("synthetic:2@64x48", [5_000_000, 5_000_001]), ("synthetic:2@64x48+7", [7, 8])])
def test_evaluate_synthetic_scenes_are_the_held_out_ones_unless_a_first_seed_is_given(tmp_path, small_weights, spec, seeds):
    assert main(["-q", "evaluate", "--weights", small_weights, "--data", spec, "--output", str(tmp_path / "r")]) == 0
    frames = json.loads((tmp_path / "r" / "metrics.json").read_text())["runs"][0]["frames"]
    assert [f["frame"] for f in frames] == [f"synthetic_{seed}" for seed in seeds]


def test_convert_weights_saves_a_torchvision_mask_rcnn_as_a_backend_checkpoint(tmp_path, capsys):
    from panoptic_perception import create_backend
    from panoptic_perception.backends import read_checkpoint
    from panoptic_perception.nn.mask_rcnn import MaskRCNN

    torch.manual_seed(0)
    source = MaskRCNN(91, width=0.25, norm_layer=torch.nn.BatchNorm2d, fpn_channels=32, representation_size=64,
                      mask_layers=(32,) * 4).state_dict()
    torch.save(source, tmp_path / "coco.pth")
    assert main(["convert-weights", str(tmp_path / "coco.pth"), str(tmp_path / "converted.pth")]) == 0
    assert capsys.readouterr().out.strip().endswith(
        "converted.pth: fusion_panoptic weights (torchvision Mask R-CNN (91 classes)); options: width=0.25, "
        "fpn_channels=32, representation_size=64, mask_channels=32, detector_classes=coco91, semantic_head=False")
    converted = read_checkpoint(tmp_path / "converted.pth")
    assert converted.backend == "fusion_panoptic" and converted.config["detector_classes"] == "coco91"
    assert converted.metadata["converted_from"] == "torchvision Mask R-CNN (91 classes)"
    counters = [k for k in source if k.endswith("num_batches_tracked")]
    assert sorted(converted.state_dict) == sorted(set(source) - set(counters))
    assert all(torch.equal(converted.state_dict[k], source[k]) for k in converted.state_dict)
    backend = create_backend("fusion_panoptic", str(tmp_path / "converted.pth"), fast=False)  # no options needed
    assert not backend.config.semantic_head and backend.network.roi_heads.num_classes == 91

    assert main(["convert-weights", str(tmp_path / "coco.pth"), str(tmp_path / "out.pth"), "--option", "detector_classes=coco80"]) == 2
    assert "mis-shaped keys" in capsys.readouterr().err


def test_convert_weights_saves_a_detectron2_pkl_with_its_conventions(tmp_path, capsys):
    from support import detectron2_model, write_detectron2_pkl

    from panoptic_perception.backends import read_checkpoint

    source = write_detectron2_pkl(tmp_path / "model_final.pkl", detectron2_model())
    assert main(["convert-weights", source, str(tmp_path / "converted.pth")]) == 0
    assert capsys.readouterr().out.strip().endswith(
        "(Detectron2 Mask R-CNN (80 classes)); options: width=0.25, fpn_channels=32, representation_size=64, "
        "mask_channels=16, detector_classes=coco80, semantic_head=False, stride_in_1x1=True, roi_aligned=True, "
        "roi_sampling_ratio=0, round_anchors=False")
    converted = read_checkpoint(tmp_path / "converted.pth")
    assert converted.origin is None and converted.backend == "fusion_panoptic" and converted.config["stride_in_1x1"]
