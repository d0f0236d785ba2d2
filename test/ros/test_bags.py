"""make-bag and reading bags: what is written is read back exactly (rosbags, sqlite3 and MCAP)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
pytest.importorskip("panoptic_perception.msg", reason="the package's interfaces are not built")

from panoptic_perception.data.rosbag import BagDataset, is_bag  # noqa: E402
from panoptic_perception.data.sources import EVALUATION_FIRST_SEED  # noqa: E402
from panoptic_perception.data.synthetic import generate_scene  # noqa: E402
from panoptic_perception.ros.bags import DEFAULT_START_NS, make_bag  # noqa: E402


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_synthetic_bag_reads_back_frames_and_ground_truth_exactly(tmp_path, storage):
    bag = tmp_path / "drive"
    summary = make_bag("synthetic:3", bag, storage=storage, rate=5.0, size=(160, 96), first_seed=7)
    assert summary["frames"] == 3 and summary["messages"] == 3 * 6 + 1  # image + 5 truth topics each, label_info once
    assert is_bag(bag)
    dataset = BagDataset(bag)
    assert len(dataset) == 3 and dataset.image_topic == "/camera/image_raw"
    for index, sample in enumerate(dataset):
        scene = generate_scene(7 + index, 160, 96)
        truth = sample.truth
        assert sample.stamp_ns == DEFAULT_START_NS + index * 200_000_000 and sample.frame_id == "camera"
        assert np.array_equal(sample.image, scene.image)
        for name in ("drivable_mask", "lane_mask", "semantic", "panoptic"):
            assert np.array_equal(getattr(truth, name), getattr(scene, name)), name
        assert truth.segments == scene.segments
        assert np.allclose(truth.detections.boxes, scene.detections.boxes)
        assert truth.detections.class_names == scene.detections.class_names
        assert truth.detections.class_ids.tolist() == scene.detections.class_ids.tolist()


def test_compressed_and_folder_sources(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), generate_scene(i, 64, 48).image)
    make_bag(str(folder), tmp_path / "plain", size=(64, 48))
    plain = list(BagDataset(tmp_path / "plain"))
    assert len(plain) == 2 and all(s.truth is None for s in plain)
    assert np.array_equal(plain[1].image, generate_scene(1, 64, 48).image)
    make_bag("synthetic:1", tmp_path / "jpeg", compressed=True, size=(64, 48))
    dataset = BagDataset(tmp_path / "jpeg")
    assert dataset.image_topic == "/camera/image_raw/compressed"
    (sample,) = list(dataset)
    assert sample.image.shape == (48, 64, 3) and sample.truth.drivable_mask.shape == (48, 64)


def test_bag_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="bag not found"):
        BagDataset(tmp_path / "missing")
    make_bag("synthetic:1", tmp_path / "bag", size=(64, 48))
    with pytest.raises(ValueError, match="not an image topic"):
        BagDataset(tmp_path / "bag", image_topic="/ground_truth/panoptic")
    with pytest.raises(FileExistsError):
        make_bag("synthetic:1", tmp_path / "bag", size=(64, 48))


def test_a_frame_whose_ground_truth_cannot_be_read_is_reported_and_the_others_read(tmp_path):
    from panoptic_perception.core.labels import CITYSCAPES
    from panoptic_perception.data.rosbag import GROUND_TRUTH_PREFIX
    from panoptic_perception.ros.bags import BagWriter, stamp_header
    from panoptic_perception.ros.conversions import bgr_to_image, perception_messages

    with BagWriter(tmp_path / "bag") as bag:
        for index in range(3):
            scene = generate_scene(index, 64, 48)
            header = stamp_header(DEFAULT_START_NS + index, "camera")
            bag.write("/camera/image_raw", DEFAULT_START_NS + index, bgr_to_image(scene.image, header))
            truth = perception_messages(scene.to_result(), header, scene.image, CITYSCAPES, {"drivable_area", "lane_lines"})
            if index == 1:
                truth["drivable_area"].data = truth["drivable_area"].data[:100]  # truncated
            for name, msg in truth.items():
                bag.write(f"{GROUND_TRUTH_PREFIX}/{name}", DEFAULT_START_NS + index, msg)
    samples = list(BagDataset(tmp_path / "bag"))
    assert [s.name for s in samples] == ["frame_000000", "frame_000001", "frame_000002"]
    assert samples[1].image is None and "its ground truth cannot be read: RejectedImage" in samples[1].error
    assert samples[1].error.endswith("data too short: 100 bytes for 64x48, step 64")
    for index in (0, 2):
        assert np.array_equal(samples[index].truth.drivable_mask, generate_scene(index, 64, 48).drivable_mask)


def test_a_message_that_does_not_deserialize_fails_its_frame_and_evaluate_goes_on(tmp_path, capsys):
    from support import copy_bag_cutting

    from panoptic_perception.cli import main

    make_bag("synthetic:4", tmp_path / "bag", size=(64, 48), first_seed=0)
    copy_bag_cutting(tmp_path / "bag", tmp_path / "cut", {("/camera/image_raw", 1), ("/ground_truth/semantic", 2)})
    samples = list(BagDataset(tmp_path / "cut"))
    assert [s.name for s in samples] == [f"frame_{i:06d}" for i in range(4)]
    assert samples[1].image is None and samples[1].error.startswith("the /camera/image_raw message does not deserialize: SerdeError: ")
    assert samples[2].image is None and samples[2].error.startswith(
        "its ground truth cannot be read: the /ground_truth/semantic message does not deserialize: SerdeError: ")
    for index in (0, 3):
        assert np.array_equal(samples[index].image, generate_scene(index, 64, 48).image)
        assert np.array_equal(samples[index].truth.semantic, generate_scene(index, 64, 48).semantic)
    assert main(["-q", "evaluate", "--data", str(tmp_path / "cut"), "--output", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err
    assert "skipped frame_000001 (read): the /camera/image_raw message does not deserialize" in err
    assert "skipped frame_000002 (read): its ground truth cannot be read" in err
    assert "Traceback" not in err


def test_synthetic_bags_hold_the_held_out_evaluation_scenes_unless_told_otherwise(tmp_path):
    from panoptic_perception.cli import main

    # The bundled weights were trained on seeds from 0: a bag for evaluation must not start there.
    assert main(["make-bag", "synthetic:2", "--output", str(tmp_path / "default"), "--size", "64x48"]) == 0
    samples = list(BagDataset(tmp_path / "default"))
    for index, sample in enumerate(samples):
        assert np.array_equal(sample.image, generate_scene(EVALUATION_FIRST_SEED + index, 64, 48).image), index
    # Told otherwise: in the spec (the evaluate spec's form) or as arguments.
    make_bag("synthetic:2@64x48+7", tmp_path / "spec")
    make_bag("synthetic:2", tmp_path / "arguments", size=(64, 48), first_seed=7)
    for bag in ("spec", "arguments"):
        images = [s.image for s in BagDataset(tmp_path / bag)]
        assert all(np.array_equal(image, generate_scene(7 + i, 64, 48).image) for i, image in enumerate(images)), bag
    with pytest.raises(ValueError, match=r"the synthetic spec and the first seed argument give different values \(7 and 8\)"):
        make_bag("synthetic:2+7", tmp_path / "both", first_seed=8)
    with pytest.raises(ValueError, match="synthetic:N\\[@WxH\\]\\[\\+SEED\\]"):
        make_bag("synthetic:2@64", tmp_path / "malformed")
    assert not (tmp_path / "both").exists() and not (tmp_path / "malformed").exists(), "checked before the bag is made"


@pytest.mark.parametrize("size", ["640", "64x48x3", "abc", "0x48", "64x", "64x-48"])
def test_make_bag_refuses_a_malformed_size_naming_the_form(tmp_path, capsys, size):
    from panoptic_perception.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["make-bag", "synthetic:1", "--output", str(tmp_path / "bag"), "--size", size])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"panoptic-perception make-bag: error: argument --size: expected WIDTHxHEIGHT with positive sizes (e.g. 640x360), "
        f"got {size!r}")
    assert not (tmp_path / "bag").exists()


def test_the_readme_make_bag_then_evaluate_scores_the_scenes_of_evaluate_synthetic(tmp_path):
    import json

    from panoptic_perception.cli import main

    assert main(["make-bag", "synthetic:3", "--output", str(tmp_path / "drive"), "--size", "160x96"]) == 0
    metrics = {}
    for name, data in (("bag", str(tmp_path / "drive")), ("synthetic", "synthetic:3@160x96")):
        assert main(["-q", "evaluate", "--data", data, "--output", str(tmp_path / name)]) == 0
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())["runs"][0]["summary"]["driving"]
    assert metrics["bag"] == metrics["synthetic"]
