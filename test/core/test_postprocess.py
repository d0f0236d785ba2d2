"""Upsampled decisions (class maps, masks) against the reference: interpolate everything, then decide."""

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panoptic_perception.core import postprocess
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.postprocess import (
    binary_masks,
    class_maps,
    probability_masks,
    upsampled_argmax,
    upsampled_threshold,
)
from panoptic_perception.core.preprocess import Geometry, prepare_batch


def reference(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """What post-processing computed before: the whole (C, H, W) interpolation of the contiguous maps."""
    return F.interpolate(maps.contiguous()[None], size=size, mode="bilinear", align_corners=False)[0]


def reference_argmax(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    return reference(maps, size).argmax(0).numpy()  # argmax: the first maximum, as documented


def smooth_logits(channels: int, height: int, width: int, seed: int, scale: float = 4.0) -> torch.Tensor:
    """Logits with regions of one class and boundaries between them (random noise at a quarter of the
    size, upsampled): both uniform and boundary cells."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, channels, max(1, height // 4), max(1, width // 4), generator=generator) * scale
    fine = torch.randn(1, channels, height, width, generator=generator) * 0.05
    return (F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False) + fine)[0]


SIZES = [  # (h, w) of the maps, (H, W) of the image
    ((88, 160), (720, 1280)),  # stride 4 of 640x352 to a camera frame: scale 8.18 x 8
    ((88, 160), (1080, 1920)),
    ((11, 20), (47, 83)),  # odd factors
    ((23, 37), (23, 37)),  # the same size: no interpolation
    ((30, 50), (19, 31)),  # downsampling: cells without pixels
    ((1, 7), (5, 30)),  # a single row
    ((7, 1), (30, 5)),
]


@pytest.fixture(params=["chosen", "per_cell"])
def route(request, monkeypatch):
    """As chosen by the boundary's size, or per cell however large the boundary (noise is all boundary)."""
    if request.param == "per_cell":  # as if interpolating everything were infinitely dear
        monkeypatch.setattr(postprocess, "_ARGMAX_DENSE_NS", math.inf)
        monkeypatch.setattr(postprocess, "_MASK_DENSE_NS", math.inf)
    return request.param


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("low, size", SIZES)
@pytest.mark.parametrize("channels", [2, 19])
def test_upsampled_argmax_equals_interpolating_then_the_argmax(low, size, channels, channels_last, route):
    for seed, logits in enumerate([smooth_logits(channels, *low, seed=0), torch.randn(channels, *low) * 3]):
        if channels_last:  # what the fast networks return: read as it is, never copied
            logits = logits[None].contiguous(memory_format=torch.channels_last)[0]
        labels = upsampled_argmax(logits, size)
        assert labels.shape == size and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, reference_argmax(logits, size), err_msg=f"logits {seed}")


def test_upsampled_argmax_resolves_ties_to_the_first_class_as_argmax_does(route):
    """Small integers: corners tie exactly, and so do many interpolated values (the tie goes to the lowest
    channel in both); a channel equal to another everywhere never wins over it."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randint(0, 3, (6, 12, 21), generator=generator).float()
    logits[4] = logits[1]
    for size in ((53, 91), (100, 170), (12, 21)):
        labels = upsampled_argmax(logits, size)
        np.testing.assert_array_equal(labels, reference_argmax(logits, size))
        assert not (labels == 4).any()
    assert (upsampled_argmax(torch.zeros(19, 4, 4), (9, 9)) == 0).all()


def test_upsampled_argmax_near_ties_take_the_kernels_own_rounding(route):
    """Two classes whose corners differ by a float32 rounding or two: only the kernel's exact arithmetic
    decides these pixels as the reference does. (Four channels: for three, torch runs another kernel on
    one thread, which rounds differently.)"""
    generator = torch.Generator().manual_seed(2)
    base = torch.rand(1, 16, 16, generator=generator) * 10
    nudge = torch.randint(-2, 3, (1, 16, 16), generator=generator).float() * 1e-6
    logits = torch.cat([base, base + nudge, base - 1, base - 2])
    size = (131, 157)
    interpolated = reference(logits, size)
    assert (interpolated[0] == interpolated[1]).any() and (interpolated[0] != interpolated[1]).any()
    np.testing.assert_array_equal(upsampled_argmax(logits, size), interpolated.argmax(0).numpy())


def test_a_class_one_rounding_below_every_corner_can_still_win(route):
    """Interpolating a constant can round up: class 0, one float32 step below class 1 at every corner, ties
    with it at some pixels, and the tie is class 0's. So the contenders of a cell include classes whose
    largest corner lies within the margin below the best guaranteed value."""
    for a in (7.1457743644714355, 1.7078194618225098):
        high = torch.tensor([a], dtype=torch.float32)
        low = torch.nextafter(high, torch.tensor([-1.0]))
        logits = torch.cat([low.expand(1, 6, 7), high.expand(1, 6, 7), (high - 1).expand(2, 6, 7)]).contiguous()
        expected = reference_argmax(logits, (131, 157))
        assert (expected == 0).any() and (expected == 1).any()
        np.testing.assert_array_equal(upsampled_argmax(logits, (131, 157)), expected)


def test_upsampled_argmax_writes_the_given_values_and_refuses_too_many_channels():
    logits = smooth_logits(19, 10, 16, seed=3)
    ids = torch.as_tensor(CITYSCAPES.ids, dtype=torch.uint8)
    np.testing.assert_array_equal(upsampled_argmax(logits, (37, 61), ids), CITYSCAPES.ids[reference_argmax(logits, (37, 61))])
    assert (upsampled_argmax(torch.randn(1, 5, 5), (9, 9), torch.tensor([7], dtype=torch.uint8)) == 7).all()
    with pytest.raises(ValueError, match="at most 256 channels"):
        upsampled_argmax(torch.zeros(257, 2, 2), (4, 4))


@pytest.mark.parametrize("low, size", SIZES)
def test_upsampled_threshold_equals_interpolating_then_comparing(low, size, route):
    for logits in (smooth_logits(1, *low, seed=4), torch.randn(1, *low)):
        for threshold in (0.0, 0.37, -1.5, math.inf, -math.inf):
            mask = upsampled_threshold(logits, size, threshold)
            assert mask.shape == size and mask.dtype == bool
            np.testing.assert_array_equal(mask, (reference(logits, size)[0] > threshold).numpy(), err_msg=f"threshold {threshold}")


def test_the_cheaper_route_is_taken(monkeypatch):
    """Noise (an untrained network: every cell a boundary, most classes contending) and masks at up to about
    1280x720 (one channel: cheap to interpolate whole) take the reference computation; regions do not."""
    calls = []
    interpolated = postprocess._interpolated
    monkeypatch.setattr(postprocess, "_interpolated", lambda *args: calls.append(args) or interpolated(*args))
    columns = torch.arange(160.0).expand(88, 160)
    stripes = torch.stack([-(columns - 8 * k - 0.5).abs() for k in range(19)])  # 19 classes side by side
    edge = (columns - 80.5)[None]
    upsampled_argmax(stripes, (720, 1280))
    upsampled_threshold(edge, (1080, 1920), 0.0)
    assert len(calls) == 0
    upsampled_argmax(torch.randn(19, 88, 160), (720, 1280))
    upsampled_threshold(torch.randn(1, 88, 160), (1080, 1920), 0.0)
    upsampled_threshold(edge, (720, 1280), 0.0)
    assert len(calls) == 3


@pytest.mark.parametrize("channels", [2, 19, 120])
def test_unusual_maps_equal_the_reference(channels, route):
    """NaN, infinities, magnitudes near float32's limit, subnormal values and half precision: the reference
    computation itself, in the maps' own dtype."""
    generator = torch.Generator().manual_seed(10)
    base = smooth_logits(channels, 22, 40, seed=10)
    size = (211, 377)
    cases = {"subnormal": base * 1e-41, "huge": base * 3e37, "half": base.half(), "bfloat16": base.bfloat16()}
    for name, value in (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)):
        spoiled = base.clone()
        spoiled[int(torch.randint(channels, (1,), generator=generator)), 5, 7] = value
        cases[name] = spoiled
    for name, logits in cases.items():
        expected = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
        np.testing.assert_array_equal(upsampled_argmax(logits, size), expected.max(0).indices.numpy(), err_msg=name)
        np.testing.assert_array_equal(upsampled_threshold(logits[:1], size, 0.0), (expected[0] > 0).numpy(), err_msg=name)


def test_upsampled_threshold_at_values_equal_to_the_threshold(route):
    """Quarter steps interpolate exactly onto the threshold at many pixels: equal is not above."""
    logits = torch.randint(0, 5, (1, 9, 14), generator=torch.Generator().manual_seed(5)).float() / 4
    for size in ((36, 56), (37, 59)):
        interpolated = reference(logits, size)[0]
        assert (interpolated == 0.5).any()
        np.testing.assert_array_equal(upsampled_threshold(logits, size, 0.5), (interpolated > 0.5).numpy())


def test_masks_and_class_maps_crop_the_letterbox_padding_first():
    geometry = Geometry.letterbox((1283, 721), (96, 64))  # content 96x54 padded by 5 rows above
    assert geometry.pad == (0, 5)
    logits = torch.stack([smooth_logits(19, 64, 96, seed=6)])
    content = geometry.crop_content(logits[0])
    (labels,) = class_maps(logits, [geometry], CITYSCAPES)
    np.testing.assert_array_equal(labels, CITYSCAPES.ids[reference_argmax(content, (721, 1283))])
    pair = torch.stack([smooth_logits(2, 64, 96, seed=7)])
    (mask,) = binary_masks(pair, [geometry], 0.6)
    difference = geometry.crop_content(pair[0, 1:] - pair[0, :1])
    np.testing.assert_array_equal(mask, (reference(difference, (721, 1283))[0] > math.log(0.6 / 0.4)).numpy())
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    probabilities = torch.sigmoid(pair[:, :1])
    (lanes,) = probability_masks(probabilities, [geometry], 0.5)
    np.testing.assert_array_equal(lanes, (reference(geometry.crop_content(probabilities[0]), (721, 1283))[0] > 0.5).numpy())


def test_class_maps_give_a_tie_to_the_first_class():
    logits = torch.zeros(1, len(CITYSCAPES), 4, 4)
    logits[0, 5] = logits[0, 3] = 1.0
    labels = class_maps(logits, [Geometry.resize((4, 4), (4, 4))], CITYSCAPES)[0]
    assert (labels == CITYSCAPES.ids[3]).all()
    labels = class_maps(logits, [Geometry.resize((9, 7), (4, 4))], CITYSCAPES)[0]
    assert (labels == CITYSCAPES.ids[3]).all()


def test_class_maps_reject_logits_of_another_label_map():
    with pytest.raises(ValueError, match="18 logit channels for a label map of 19 classes"):
        class_maps(torch.zeros(1, 18, 4, 4), [Geometry.resize((4, 4), (4, 4))], CITYSCAPES)


# -- real logits ------------------------------------------------------------------------------------
def _network_maps(backend, image: np.ndarray) -> torch.Tensor:
    """What the backend's post-processing receives for one image: class scores or logits, (C, h, w)."""
    batch, _ = prepare_batch([image], backend.input_size, backend.resize_mode, backend.pad_value,
                             channels_last=backend.channels_last)
    with torch.inference_mode():
        outputs = backend.finish(backend.run_network(batch), batch)
    return (outputs[0] if isinstance(outputs, tuple) else outputs)[0]


def _frames(reference_dir=None):
    from panoptic_perception.data.synthetic import generate_scene

    frames = [generate_scene(11, 1280, 720).image]
    if reference_dir is not None:
        frames.append(cv2.imread(str(reference_dir / "images" / "caeb782d-4a20b7c4.jpg")))
    return frames


@pytest.fixture(scope="module")
def semantic_backends():
    from panoptic_perception import create_backend

    return {name: create_backend(name) for name in ("cyclenet", "cross_cooperative", "fusion_panoptic")}


@pytest.mark.parametrize("name", ["cyclenet", "cross_cooperative", "fusion_panoptic"])
def test_class_maps_of_real_logits_equal_the_reference(name, semantic_backends, request):
    """The bundled networks' scores on a synthetic and (where ../shared is present) a real road frame, at
    camera sizes: the contiguous reference exactly; the channels-last reference (torch's other CPU kernel,
    what cyclenet and fusion_panoptic computed before) except where its two best classes are within
    float32 rounding of each other."""
    backend = semantic_backends[name]
    try:
        frames = _frames(request.getfixturevalue("reference_dir"))
    except pytest.skip.Exception:
        frames = _frames()
    for image in frames:
        maps = _network_maps(backend, image)
        assert (maps.stride(0) == 1) == (name != "cross_cooperative"), "channels last, or the ensemble's contiguous sum"
        for size in ((720, 1280), (1080, 1920), (721, 1283)):
            labels = upsampled_argmax(maps, size)
            expected = reference(maps, size)
            np.testing.assert_array_equal(labels, expected.argmax(0).numpy())
            as_stored = F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]
            differ = labels != as_stored.argmax(0).numpy()
            if differ.any():
                top = expected.permute(1, 2, 0)[torch.from_numpy(differ)].topk(2, dim=1).values
                assert (top[:, 0] - top[:, 1] <= 1e-6 * expected.abs().max()).all()


def test_masks_of_real_logits_equal_the_reference(official_twinlitenet_weights, reference_dir):
    """The official TwinLiteNet's drivable and lane logits on a real frame, to camera sizes."""
    from panoptic_perception import create_backend

    backend = create_backend("twinlitenet", str(official_twinlitenet_weights))
    image = cv2.imread(str(reference_dir / "images" / "caeb782d-4a20b7c4.jpg"))
    batch, _ = prepare_batch([image], backend.input_size, backend.resize_mode, backend.pad_value,
                             channels_last=backend.channels_last)
    with torch.inference_mode():
        drivable, lanes = backend.finish(backend.run_network(batch), batch)
    for logits in (drivable, lanes):
        difference = logits[0, 1:] - logits[0, :1]
        for size in ((720, 1280), (1080, 1920), (721, 1283)):
            np.testing.assert_array_equal(upsampled_threshold(difference, size, 0.0),
                                          (reference(difference, size)[0] > 0).numpy())
