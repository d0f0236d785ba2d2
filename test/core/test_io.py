import cv2
import numpy as np
import pytest

from panoptic_perception.core.io import FrameSource, cityscapes_id, read_image
from panoptic_perception.core.preprocess import InvalidImageError


def _write_image(path, value=100, size=(32, 24)):
    cv2.imwrite(str(path), np.full((size[1], size[0], 3), value, np.uint8))


def test_files_folders_and_videos_in_order_with_unique_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_image(tmp_path / "a" / "frame.png", 10)
    _write_image(tmp_path / "b" / "frame.png", 20)
    (tmp_path / "a" / "notes.txt").write_text("ignored in folders")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(3):
        writer.write(np.full((24, 32, 3), 50 * i, np.uint8))
    writer.release()

    source = FrameSource([tmp_path / "a", tmp_path / "b", video])
    frames = list(source)
    assert len(source) == 5
    assert [f.name for f in frames] == ["frame", "frame_2", "clip_000000", "clip_000001", "clip_000002"]
    assert all(f.error is None and f.image.shape == (24, 32, 3) for f in frames)


def test_undecodable_file_is_reported_not_raised(tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    _write_image(good)
    bad.write_bytes(b"\xff\xd8 truncated jpeg")
    frames = list(FrameSource([tmp_path]))
    assert [f.name for f in frames] == ["bad", "good"]
    assert frames[0].image is None and "cannot decode" in frames[0].error
    assert frames[1].image is not None


def test_missing_input_fails_immediately(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found"):
        FrameSource([tmp_path / "missing.jpg"])


def test_read_image_error_names_the_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"nope")
    with pytest.raises(InvalidImageError, match="x.png"):
        read_image(bad)


def test_cityscapes_images_are_named_by_their_cityscapes_id(tmp_path):
    assert cityscapes_id("val/aachen/aachen_000000_000019_leftImg8bit.png") == "aachen_000000_000019"
    assert cityscapes_id("frame.png") is None and cityscapes_id("_leftImg8bit.png") is None
    for name in ("synth_000000_000000_leftImg8bit.png", "_leftImg8bit.png", "road.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((4, 4, 3), np.uint8))
    assert [f.name for f in FrameSource([tmp_path])] == ["_leftImg8bit", "road", "synth_000000_000000"]


def test_only_city_sequence_frame_names_are_cityscapes_ids(tmp_path):
    assert cityscapes_id("bad-honnef_000000_000019_leftImg8bit.png") == "bad-honnef_000000_000019"
    for name in ("x_leftImg8bit.png", "aachen_000000_19_leftImg8bit.png", "my_aachen_000000_000019_leftImg8bit.png",
                 "aachen_000000_000019.png"):
        assert cityscapes_id(name) is None, name
    _write_image(tmp_path / "x_leftImg8bit.png")
    assert [f.name for f in FrameSource([tmp_path])] == ["x_leftImg8bit"]


def test_inputs_repeating_a_cityscapes_frame_are_refused_naming_them(tmp_path):
    (tmp_path / "sub").mkdir()
    paths = [tmp_path / "aachen_000000_000019.png", tmp_path / "aachen_000000_000019_leftImg8bit.png",
             tmp_path / "sub" / "aachen_000000_000019_leftImg8bit.png"]
    for path in paths:
        _write_image(path)
    for inputs in (paths, paths[:2], paths[1:]):
        with pytest.raises(ValueError) as error:
            FrameSource(inputs).check_cityscapes_ids()
        assert str(error.value) == (f"{len(inputs)} inputs are Cityscapes frame aachen_000000_000019 "
                                    f"({', '.join(map(str, inputs))}): Cityscapes' scripts take one file per frame, "
                                    f"give each frame once")
    # One image per frame, and repeated names that are no Cityscapes frame (renamed frame, frame_2), are fine.
    for name in ("aachen_000000_000020_leftImg8bit.png", "frame.png", "sub/frame.png"):
        _write_image(tmp_path / name)
    FrameSource([paths[1], tmp_path / "aachen_000000_000020_leftImg8bit.png", tmp_path / "frame.png",
                 tmp_path / "sub" / "frame.png"]).check_cityscapes_ids()
