import re

import numpy as np
import pytest
import torch

from panoptic_perception.core.postprocess import binary_masks
from panoptic_perception.core.preprocess import Geometry, InvalidImageError, ResizeMode, as_bgr_image, as_bgr_images, network_input_size, prepare_batch


def test_batch_is_rgb_in_unit_range_nchw():
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    batch, geometries = prepare_batch([image], (6, 4))
    assert batch.shape == (1, 3, 4, 6) and batch.dtype == torch.float32
    assert torch.all(batch[0, 2] == 1.0) and torch.all(batch[0, :2] == 0.0), "channel 2 of RGB is blue"
    assert geometries[0] == Geometry((6, 4), (6, 4), (6, 4), (0, 0))


def test_letterbox_of_a_720p_frame_matches_the_official_yolopv2_geometry():
    g = Geometry.letterbox((1280, 720), (640, 384))
    assert g.content_size == (640, 360) and g.pad == (0, 12) and g.scale == (0.5, 0.5)


def test_letterbox_pads_with_the_pad_value_and_keeps_content():
    image = np.full((480, 640, 3), 7, np.uint8)
    batch, (g,) = prepare_batch([image], (640, 384), ResizeMode.LETTERBOX, pad_value=114)
    assert g.content_size == (512, 384) and g.pad == (64, 0)
    assert torch.allclose(batch[0, :, :, :64], torch.tensor(114 / 255))
    assert torch.allclose(batch[0, :, :, 64:576], torch.tensor(7 / 255))


@pytest.mark.parametrize("source", [(1280, 720), (640, 480), (333, 777), (1920, 1080)])
def test_box_mapping_round_trips_exactly(source):
    g = Geometry.letterbox(source, (640, 384))
    boxes = np.array([[0, 0, source[0], source[1]], [10.5, 20.25, 100, 200]], np.float32)
    assert np.allclose(g.boxes_to_source(g.boxes_to_network(boxes)), boxes, atol=1e-3)
    # The content area maps onto the whole image.
    left, top = g.pad
    cw, ch = g.content_size
    assert np.allclose(g.boxes_to_source([[left, top, left + cw, top + ch]]), [[0, 0, *source]], atol=1e-3)


def test_boxes_are_clipped_to_the_image():
    g = Geometry.letterbox((1280, 720), (640, 384))
    assert np.allclose(g.boxes_to_source([[-10, 0, 700, 400]]), [[0, 0, 1280, 720]])


def test_masks_come_back_at_input_resolution_without_padding():
    # A network-size logit map whose positive region is the right half of the content area.
    g = Geometry.letterbox((200, 100), (64, 64))  # content 64x32, pad top 16
    logits = torch.zeros(1, 2, 64, 64)
    logits[0, 1, :, 32:] = 5.0
    logits[0, 1, :16] = 5.0  # padding rows must be cropped away, not stretched into the image
    logits[0, 0] = 1.0
    mask = binary_masks(logits, [g])[0]
    assert mask.shape == (100, 200) and mask.dtype == np.uint8
    assert mask[:, 110:].all() and not mask[:, :90].any()


def test_binary_masks_equal_argmax_of_interpolated_logits():
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 23, 37)
    g = Geometry.resize((91, 53), (37, 23))
    upsampled = torch.nn.functional.interpolate(logits, size=(53, 91), mode="bilinear", align_corners=False)
    expected = upsampled.argmax(1)[0].numpy()
    assert (binary_masks(logits, [g])[0] == expected).mean() > 0.999


@pytest.mark.parametrize(
    "image, message",
    [
        ("not an image", "got a str"),
        (np.zeros((4, 4, 3), np.float32), "got an array of shape (4, 4, 3) and dtype float32"),
        (np.zeros((4, 4), np.uint16), "got an array of shape (4, 4) and dtype uint16"),
        (np.zeros((4, 4, 2), np.uint8), "got an array of shape (4, 4, 2) and dtype uint8"),
        (np.zeros((4,), np.uint8), "got an array of shape (4,) and dtype uint8"),
        (np.zeros((0, 4, 3), np.uint8), "zero size: an array of shape (0, 4, 3)"),
    ],
)
def test_bad_images_are_rejected_with_a_clear_reason(image, message):
    with pytest.raises(InvalidImageError, match=re.escape(message)) as error:
        as_bgr_image(image)
    assert "zero size" in message or "(H, W) or (H, W, 1) grey, (H, W, 3) BGR or (H, W, 4) BGRA" in str(error.value)


def test_grey_and_bgra_images_become_bgr():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), np.uint8)
    for image in (grey, grey[:, :, None]):
        bgr = as_bgr_image(image)
        assert bgr.shape == (5, 7, 3) and bgr.dtype == np.uint8 and all((bgr[:, :, c] == grey).all() for c in range(3))
    bgra = rng.integers(0, 256, (5, 7, 4), np.uint8)
    np.testing.assert_array_equal(as_bgr_image(bgra), bgra[:, :, :3])
    view = rng.integers(0, 256, (10, 14, 3), np.uint8)[::2, ::-2]  # strided, reversed: not contiguous
    converted = as_bgr_image(view)
    np.testing.assert_array_equal(converted, view)
    assert converted.flags.c_contiguous


def test_single_images_and_batches_are_told_apart():
    grey, bgr = np.zeros((6, 8), np.uint8), np.zeros((6, 8, 3), np.uint8)
    for single in (grey, grey[:, :, None], bgr, np.zeros((6, 8, 4), np.uint8)):
        images, is_single = as_bgr_images(single)
        assert is_single and len(images) == 1 and images[0].shape == (6, 8, 3)
    for batch, n in (([grey, bgr], 2), ((bgr,), 1), (np.zeros((3, 6, 8, 3), np.uint8), 3)):
        images, is_single = as_bgr_images(batch)
        assert not is_single and [i.shape for i in images] == [(6, 8, 3)] * n
    for bad, message in (
        (np.zeros((2, 3, 6, 8, 3), np.uint8), "got an array of shape (2, 3, 6, 8, 3) and dtype uint8"),
        (np.zeros((3, 6, 8, 3), np.float64), "got an array of shape (3, 6, 8, 3) and dtype float64"),
        (np.zeros((3, 6, 8, 4), np.uint8), "got an array of shape (3, 6, 8, 4)"),
        ([], "got an empty list"),
        ([bgr, np.zeros((6, 8), np.uint16)], "dtype uint16 (image 1 of a list of 2)"),
        (None, "got a NoneType"),
    ):
        with pytest.raises(InvalidImageError, match=re.escape(message)):
            as_bgr_images(bad)


def test_network_size_must_be_a_multiple():
    assert network_input_size((640, 360), 8) == (640, 360)
    with pytest.raises(ValueError, match="multiples of 8"):
        network_input_size((641, 360), 8)


def test_mask_threshold_is_a_probability_threshold():
    # positive - background = log(p / (1 - p)) for p = 0.2, 0.5, 0.7, 0.95
    p = torch.tensor([0.2, 0.5, 0.7, 0.95])
    logits = torch.stack([torch.zeros(4), torch.log(p / (1 - p))])[None, :, None, :]
    g = Geometry.resize((4, 1), (4, 1))
    assert binary_masks(logits, [g])[0].tolist() == [[0, 0, 1, 1]], "0.5: argmax, a tie is background"
    assert binary_masks(logits, [g], threshold=0.8)[0].tolist() == [[0, 0, 0, 1]]
    assert binary_masks(logits, [g], threshold=0.1)[0].tolist() == [[1, 1, 1, 1]]
    assert binary_masks(logits, [g], threshold=1.0)[0].tolist() == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binary_masks(logits, [g], threshold=1.5)
