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


#: Three cameras of different sizes; the common --size for the one without its own.
CAMERAS = {"front": (160, 96), "left": (64, 48), "right": None}
COMMON_SIZE = (96, 64)


def test_several_cameras_interleave_in_time_each_with_its_scenes_frame_id_and_ground_truth(tmp_path):
    summary = make_bag("synthetic:2", tmp_path / "bag", rate=5.0, size=COMMON_SIZE, first_seed=7, cameras=CAMERAS)
    assert summary["frames"] == 6 and summary["messages"] == 6 * 6 + 1  # image + 5 truth topics each, label_info once
    assert summary["image_topics"] == ["/front/image_raw", "/left/image_raw", "/right/image_raw"]
    dataset = BagDataset(tmp_path / "bag")  # every image topic, none chosen
    assert dataset.image_topics == ("/front/image_raw", "/left/image_raw", "/right/image_raw") and len(dataset) == 6
    assert dataset.cameras == ("front", "left", "right")
    samples = list(dataset)
    assert [s.name for s in samples] == [f"{camera}/frame_{k:06d}" for k in range(2) for camera in CAMERAS]
    for position, sample in enumerate(samples):
        k, i = divmod(position, 3)
        camera, size = list(CAMERAS.items())[i]
        scene = generate_scene(7 + k * 3 + i, *(size or COMMON_SIZE))
        assert sample.frame_id == camera
        assert sample.stamp_ns == DEFAULT_START_NS + k * 200_000_000 + i * 200_000_000 // 3, "interleaved in time"
        assert np.array_equal(sample.image, scene.image), sample.name
        assert np.array_equal(sample.truth.semantic, scene.semantic) and truth_boxes_match(sample.truth, scene), sample.name


def truth_boxes_match(truth, scene) -> bool:
    return np.allclose(truth.detections.boxes, scene.detections.boxes) and truth.detections.class_names == scene.detections.class_names


def test_chosen_cameras_of_a_bag_are_read_with_their_own_ground_truth(tmp_path):
    make_bag("synthetic:2", tmp_path / "bag", size=(64, 48), first_seed=0, cameras=dict.fromkeys(("front", "left", "right")),
             compressed=True)
    one = BagDataset(tmp_path / "bag", "/right/image_raw/compressed")
    assert one.image_topic == "/right/image_raw/compressed"
    samples = list(one)  # one camera: the names of a single-camera bag
    assert [s.name for s in samples] == ["frame_000000", "frame_000001"]
    assert [s.frame_id for s in samples] == ["right", "right"]
    for k, sample in enumerate(samples):
        assert np.array_equal(sample.truth.semantic, generate_scene(k * 3 + 2, 64, 48).semantic)
    two = BagDataset(tmp_path / "bag", ["/left/image_raw/compressed", "/front/image_raw/compressed"])
    assert two.cameras == ("left", "front") and len(two) == 4
    assert [s.name for s in two] == ["front/frame_000000", "left/frame_000000", "front/frame_000001", "left/frame_000001"]
    with pytest.raises(ValueError, match=r"several image topics are read \(/left/image_raw/compressed, /front/image_raw/compressed\); choose one"):
        two.image_topic


def test_a_flat_ground_truth_labels_only_a_single_camera_and_two_topics_of_one_camera_are_refused(tmp_path):
    from panoptic_perception.core.labels import CITYSCAPES
    from panoptic_perception.data.rosbag import GROUND_TRUTH_PREFIX
    from panoptic_perception.errors import ConfigurationError
    from panoptic_perception.ros.bags import BagWriter, stamp_header
    from panoptic_perception.ros.camera import compressed_msg
    from panoptic_perception.ros.conversions import bgr_to_image, perception_messages

    scene = generate_scene(0, 64, 48)
    with BagWriter(tmp_path / "bag") as bag:
        for topic, frame_id in (("/front/image_raw", "front"), ("/rear/image_raw", "rear")):
            header = stamp_header(DEFAULT_START_NS, frame_id)  # the same stamp: truth must not go to both cameras
            bag.write(topic, DEFAULT_START_NS, bgr_to_image(scene.image, header))
        bag.write("/front/image_raw/compressed", DEFAULT_START_NS, compressed_msg(scene.image, header))
        truth = perception_messages(scene.to_result(), header, scene.image, CITYSCAPES, {"semantic"})
        bag.write(f"{GROUND_TRUTH_PREFIX}/semantic", DEFAULT_START_NS, truth["semantic"])
    with pytest.raises(ConfigurationError, match=r"choose one image topic of camera front among "
                                                 r"\['/front/image_raw', '/front/image_raw/compressed'\]"):
        BagDataset(tmp_path / "bag")
    both = list(BagDataset(tmp_path / "bag", ["/front/image_raw", "/rear/image_raw"]))
    assert [(s.name, s.truth) for s in both] == [("front/frame_000000", None), ("rear/frame_000000", None)]
    (alone,) = BagDataset(tmp_path / "bag", "/rear/image_raw")
    assert np.array_equal(alone.truth.semantic, scene.semantic), "one camera read: /ground_truth/* labels it"


def test_make_bag_cameras_from_the_command_line(tmp_path, capsys):
    from panoptic_perception.cli import main

    argv = ["make-bag", "synthetic:2", "--output", str(tmp_path / "bag"), "--size", "64x48", "--cameras", "front@96x64,rear"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("4 frames (25 messages) written to ")
    samples = list(BagDataset(tmp_path / "bag"))
    assert [(s.name, s.image.shape) for s in samples] == [("front/frame_000000", (64, 96, 3)), ("rear/frame_000000", (48, 64, 3)),
                                                          ("front/frame_000001", (64, 96, 3)), ("rear/frame_000001", (48, 64, 3))]
    assert np.array_equal(samples[3].image, generate_scene(EVALUATION_FIRST_SEED + 3, 64, 48).image), "held-out seeds by default"


@pytest.mark.parametrize("cameras", ["front,front", "front,", "1st", "front@64", "front/left", "front@0x48"])
def test_make_bag_refuses_malformed_cameras_naming_the_form(tmp_path, capsys, cameras):
    from panoptic_perception.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["make-bag", "synthetic:1", "--output", str(tmp_path / "bag"), "--cameras", cameras])
    assert exit_.value.code == 2
    assert "make-bag: error: argument --cameras: expected " in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "bag").exists()


@pytest.mark.parametrize("name, holds", [("ground_truth", "the ground truth"), ("panoptic_perception", "the node's outputs")])
def test_make_bag_refuses_camera_names_whose_topics_hold_something_else(tmp_path, capsys, name, holds):
    from panoptic_perception.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["make-bag", "synthetic:1", "--output", str(tmp_path / "bag"), "--cameras", f"front,{name}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"{name} is not a camera name: /{name}/ holds {holds}")


def test_make_bag_cameras_need_synthetic_scenes_and_valid_names(tmp_path, capsys):
    import cv2

    from panoptic_perception.cli import main

    cv2.imwrite(str(tmp_path / "frame.png"), generate_scene(0, 64, 48).image)
    assert main(["make-bag", str(tmp_path / "frame.png"), "--output", str(tmp_path / "bag"), "--cameras", "front,rear"]) == 2
    assert capsys.readouterr().err.strip().endswith("several cameras are made from synthetic scenes only (synthetic:N), "
                                                    f"got {tmp_path / 'frame.png'}")
    with pytest.raises(ValueError, match="a camera name is a letter then letters, digits or _"):
        make_bag("synthetic:1", tmp_path / "bag", cameras={"front/left": None})
    assert main(["make-bag", str(tmp_path / "frame.png"), "--output", str(tmp_path / "bag"), "--camera-info"]) == 2
    assert capsys.readouterr().err.strip().endswith("--camera-info needs synthetic scenes (synthetic:N), whose camera "
                                                    f"is known; got {tmp_path / 'frame.png'}")
    assert not (tmp_path / "bag").exists()
