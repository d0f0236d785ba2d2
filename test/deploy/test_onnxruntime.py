"""Every backend exported and run by ONNX Runtime equals eager torch (README, Deployment: tolerances).

Raw outputs: max |ONNX Runtime - eager| at most RELATIVE_TOLERANCE of the output's largest magnitude, for
every output tensor (relative to the scale: untrained networks reach logits of 1e6). Results
(parity.assert_results_equal): masks, semantic and panoptic images at least 99.9% equal; detections the
same in number and class, boxes within 0.05 input pixels and scores within 1e-4. The YOLOPv2 here is
untrained (parity.py: so that NMS has thousands of candidates), and an untrained detector scores thousands
of anchors equally to 1e-7, so which of two tied boxes NMS keeps is decided by rounding: its detections are
compared before NMS (the decoded candidates, boxes and scores), the NMS being the same Python code for both
runtimes.
"""

from __future__ import annotations

import pytest
import torch
from parity import BACKENDS, RELATIVE_TOLERANCE, assert_outputs_close, assert_results_equal, backend_arguments

from panoptic_perception import create_backend
from panoptic_perception.backends.yolopv2 import detection_candidates
from panoptic_perception.core.preprocess import prepare_batch
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.deploy.onnx_export import flatten_outputs, unflatten_outputs


@pytest.mark.parametrize("name", BACKENDS)
def test_onnxruntime_equals_eager_torch(name, request, onnx_cache):
    weights, options = backend_arguments(name, request)
    eager = create_backend(name, weights, **options)
    ort = create_backend(name, weights, runtime="onnxruntime", **options)
    assert ort.describe()["runtime"] == "onnxruntime" and ort.describe()["onnx"].startswith(str(onnx_cache))
    images = [generate_scene(seed, 640, 360).image for seed in (0, 1)]  # a batch of 2: the batch is dynamic
    batch, _ = prepare_batch(images, eager.input_size, eager.resize_mode)
    with torch.inference_mode():
        expected, structure = flatten_outputs(eager.forward(batch))
        actual, _ = flatten_outputs(ort.run_network(batch))
    assert_outputs_close(actual, expected, RELATIVE_TOLERANCE)

    eager_results, ort_results = eager.process(images), ort.process(images)
    assert_results_equal(eager_results, ort_results, detections=name != "yolopv2")
    assert_results_equal(eager_results[:1], [ort(images[0])], detections=name != "yolopv2")  # and a batch of one
    if name == "fusion_panoptic":
        assert all(len(r.detections.boxes) > 0 for r in eager_results), "the comparison covers detections"
    if name == "yolopv2":
        (pred, grid), *_ = unflatten_outputs(expected, structure)
        (ort_pred, ort_grid), *_ = unflatten_outputs(actual, structure)
        for image in range(len(images)):
            a = detection_candidates(ort_pred, ort_grid, batch.shape[2], image, eager.thresholds.score)
            e = detection_candidates(pred, grid, batch.shape[2], image, eager.thresholds.score)
            assert len(e.boxes) > 1000 and torch.equal(a.classes, e.classes)
            torch.testing.assert_close(a.boxes, e.boxes, rtol=0, atol=1e-3)
            torch.testing.assert_close(a.scores, e.scores, rtol=0, atol=1e-5)
