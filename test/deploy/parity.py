"""What the runtime tests compare, shared by the ONNX Runtime and TensorRT tests: a small but real variant
of every backend, and result equality (README, Deployment: tolerances)."""

from __future__ import annotations

import numpy as np
import torch

BACKENDS = ("twinlitenet", "yolopv2", "fusion_panoptic", "cyclenet", "cross_cooperative")
RELATIVE_TOLERANCE = 1e-5
MASK_AGREEMENT = 0.999
BOX_TOLERANCE_PX = 0.05
#: Bundled weights run smaller than their own 640x352, to keep the tests fast.
SMALLER_INPUT = {"fusion_panoptic": (256, 160), "cyclenet": (256, 144)}


def backend_arguments(name: str, request) -> tuple[str | None, dict]:
    """Weights and options of a small but real variant of each backend (bundled weights where they exist)."""
    if name == "yolopv2":  # untrained detection biases: every anchor a candidate, so NMS has work
        return request.getfixturevalue("yolopv2_small_checkpoint")[0], {"input_size": (320, 192)}
    if name == "cross_cooperative":  # a narrow random network at 96x64 (conftest.py), smaller than the bundled one
        return request.getfixturevalue("cross_cooperative_checkpoint"), {}
    if name in SMALLER_INPUT:
        return None, {"input_size": SMALLER_INPUT[name]}
    return None, {}  # twinlitenet: bundled weights at their own size (320x184)


def assert_results_equal(eager_results, ort_results, detections: bool = True, agreement: float = MASK_AGREEMENT) -> None:
    """Masks, semantic and panoptic images at least ``agreement`` equal; with ``detections``, the same detections
    (number and classes; boxes within BOX_TOLERANCE_PX, scores within 1e-4)."""
    for eager, ort in zip(eager_results, ort_results, strict=True):
        for field in ("drivable_mask", "lane_mask", "semantic", "panoptic"):
            expected = getattr(eager, field)
            assert (expected is None) == (getattr(ort, field) is None), field
            if expected is not None:
                assert (getattr(ort, field) == expected).mean() >= agreement, field
        if eager.detections is not None and detections:
            assert len(ort.detections.boxes) == len(eager.detections.boxes)
            np.testing.assert_array_equal(ort.detections.class_ids, eager.detections.class_ids)
            np.testing.assert_allclose(ort.detections.boxes, eager.detections.boxes, rtol=0, atol=BOX_TOLERANCE_PX)
            np.testing.assert_allclose(ort.detections.scores, eager.detections.scores, rtol=0, atol=1e-4)


def assert_outputs_close(actual: list[torch.Tensor], expected: list[torch.Tensor], relative_tolerance: float,
                         same_dtype: bool = True) -> None:
    """Raw outputs (flattened): the same count and shapes (and dtypes with ``same_dtype``), each within
    ``relative_tolerance`` of the expected tensor's largest magnitude (untrained networks reach logits of 1e6)."""
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and (a.dtype == e.dtype or not same_dtype), index
        assert (a.float() - e.float()).abs().max() <= relative_tolerance * e.float().abs().max(), index
