"""Today's outputs, recorded in ``test/golden/`` by ``python test/golden_outputs.py record``: every backend
with its bundled weights, the official TwinLiteNet weights and the synthetic scenes must reproduce them.

On the machine that recorded them the outputs are identical bit for bit. The comparison leaves room for
what another CPU may change without any change of code (the last bits of a convolution, which can move a
pixel whose two classes tie to a rounding): at most 0.01 % of a map's pixels, scores within 1e-5 and box
corners within 1e-3 px. The scenes are rendered with integer rasterisation from float geometry and must
match exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from golden_outputs import FRAME_SEEDS, GOLDEN, backend_outputs, official_twinlitenet_outputs, scene_digests

MAP_FIELDS = ("drivable_mask", "lane_mask", "semantic", "panoptic")
MAX_CHANGED_PIXELS = 1e-4


def assert_same_outputs(actual: dict[str, np.ndarray], golden) -> None:
    assert sorted(actual) == sorted(golden.files)
    for key in sorted(actual):
        value, expected = actual[key], golden[key]
        assert value.dtype == expected.dtype and value.shape == expected.shape, key
        field = key.rsplit("/", 1)[1]
        if field in MAP_FIELDS:
            changed = np.count_nonzero(value != expected) / value.size
            assert changed <= MAX_CHANGED_PIXELS, f"{key}: {changed:.4%} of the pixels changed"
        elif field == "segments":  # id, category, is_thing exact; area and box may follow a tied pixel
            assert np.array_equal(value[:, :3], expected[:, :3]), key
            assert np.abs(value[:, 3] - expected[:, 3]).max(initial=0) <= MAX_CHANGED_PIXELS * 640 * 360, key
            assert np.abs(value[:, 4:] - expected[:, 4:]).max(initial=0) <= 1, key
        elif field == "class_ids":
            assert np.array_equal(value, expected), key
        else:
            np.testing.assert_allclose(value, expected, rtol=0, atol=1e-3 if field == "boxes" else 1e-5, err_msg=key)


@pytest.fixture(scope="module")
def golden_backends():
    with np.load(GOLDEN / "backends.npz") as golden:
        yield golden


def test_every_backend_reproduces_its_golden_outputs(golden_backends):
    actual = backend_outputs()
    assert {key.split("/")[1] for key in actual} == {str(seed) for seed in FRAME_SEEDS}
    assert_same_outputs(actual, golden_backends)


def test_the_official_twinlitenet_weights_reproduce_their_golden_output(reference_dir):
    with np.load(GOLDEN / "official_twinlitenet.npz") as golden:
        actual = official_twinlitenet_outputs(reference_dir)
        assert actual["official_twinlitenet/drivable_mask"].sum() > 10_000  # a real road was found
        assert_same_outputs(actual, golden)


def test_generated_scenes_reproduce_their_golden_digests():
    golden = json.loads((GOLDEN / "scenes.json").read_text())
    actual = scene_digests()
    assert len(actual) == len(golden) == 50 * 7
    changed = sorted(key for key in golden if actual.get(key) != golden[key])
    assert not changed, f"{len(changed)} scene arrays changed, first: {changed[:5]}"


def test_the_comparison_notices_a_changed_output(golden_backends):
    """The tolerances above cannot hide a real change: one flipped lane pixel in 1e4 is already too many."""
    actual = {key: golden_backends[key].copy() for key in golden_backends.files}
    key = "twinlitenet/5000000/lane_mask"
    actual[key].reshape(-1)[:24] ^= 1
    with pytest.raises(AssertionError, match="pixels changed"):
        assert_same_outputs(actual, golden_backends)
