"""The fusion_panoptic backend: its outputs, thresholds, the fast path, checkpoints and memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import FUSION_PANOPTIC_SMALL as SMALL

from panoptic_perception import create_backend
from panoptic_perception.backends import save_checkpoint
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.types import PANOPTIC_LABEL_DIVISOR
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.models.fusion_panoptic import THING_IDS
from panoptic_perception.nn import count_parameters

@pytest.fixture(scope="module")
def small_backend():
    torch.manual_seed(0)
    backend = create_backend("fusion_panoptic", allow_random_weights=True, fast=False, **SMALL)
    backend.set_thresholds(score=0.0)  # random weights: let every detection through the fusion
    return backend


def test_backend_outputs_are_consistent_at_the_input_resolution(small_backend):
    image = generate_scene(1, 320, 180).image
    result = small_backend(image)
    assert result.semantic.shape == result.panoptic.shape == (180, 320)
    assert result.semantic.dtype == np.uint8 and result.panoptic.dtype == np.int32
    assert set(np.unique(result.semantic).tolist()) <= set(CITYSCAPES.ids.tolist())
    values, counts = np.unique(result.panoptic[result.panoptic > 0], return_counts=True)
    assert sorted(s.id for s in result.segments) == values.tolist()
    assert [s.area for s in sorted(result.segments, key=lambda s: s.id)] == counts.tolist()
    for segment in result.segments:
        assert segment.category_id == segment.id // PANOPTIC_LABEL_DIVISOR
        assert segment.is_thing == (segment.category_id in CITYSCAPES.thing_ids)
    things = [s for s in result.segments if s.is_thing]
    assert len(result.detections) == len(things)
    assert set(result.detections.class_ids.tolist()) <= set(THING_IDS)
    assert (result.detections.boxes[:, [0, 2]] <= 320).all() and (result.detections.boxes[:, [1, 3]] <= 180).all()


def test_instances_dropped_by_the_fusion_are_counted_and_logged_once(small_backend, monkeypatch, caplog):
    """More than 999 instances of a class (the panoptic format's limit): fuse drops the smallest; the
    backend counts them over its frames and warns the first time."""
    from panoptic_perception.backends import fusion_panoptic

    real_fuse = fusion_panoptic.fuse

    def crowded(*args, **kwargs):
        fused = real_fuse(*args, **kwargs)
        fused.dropped = 4
        return fused

    monkeypatch.setattr(fusion_panoptic, "fuse", crowded)
    image = generate_scene(1, 320, 180).image
    with caplog.at_level("WARNING", logger="panoptic_perception"):
        small_backend(image)
        small_backend(image)
    assert small_backend.dropped_instances == 8
    warnings = [r for r in caplog.records if "beyond the panoptic format's 999" in r.getMessage()]
    assert len(warnings) == 1 and "4 instances" in warnings[0].getMessage()


def test_runtime_thresholds_reach_the_box_head(small_backend):
    batch = torch.rand(1, 3, 160, 256)
    small_backend.set_thresholds(score=0.0, iou=0.3, max_detections=3)
    try:
        _, detections = small_backend.finish(small_backend.forward(batch), batch)
        assert small_backend.network.roi_heads.nms_thresh == 0.3
        assert 0 < len(detections[0]["boxes"]) <= 3
    finally:
        small_backend.set_thresholds(iou=0.5, max_detections=100)
    small_backend.set_thresholds(score=1.0)  # no detection passes: only stuff (and the paper's new instances)
    try:
        result = small_backend(generate_scene(2, 320, 180).image)
    finally:
        small_backend.set_thresholds(score=0.0)
    assert all(not s.is_thing or s.score == 0.5 for s in result.segments), "things are the fusion's new instances"


def test_fast_path_folds_batchnorm_and_the_checkpoint_round_trip_is_exact(small_backend, tmp_path):
    path = save_checkpoint(tmp_path / "small.pth", "fusion_panoptic", small_backend.network.state_dict(), SMALL)
    fast = create_backend("fusion_panoptic", path)
    plain = create_backend("fusion_panoptic", path, fast=False)
    assert count_parameters(fast.network) < count_parameters(plain.network)
    x = torch.randn(1, 3, 160, 256)
    with torch.no_grad():
        folded, unfolded = fast.network.backbone(x), plain.network.backbone(x)
    for level, value in unfolded.items():
        assert torch.allclose(folded[level], value, atol=1e-4 * value.abs().max().item()), level
    image = generate_scene(4, 320, 180).image
    plain.set_thresholds(score=0.0)
    assert np.array_equal(plain(image).panoptic, small_backend(image).panoptic)


def test_memory_grows_with_the_boxes_not_with_detections_times_the_frame(small_backend):
    """1,000 detections on a 1920x1080 frame: a full-size mask per detection would be 2 GB; pasted into their
    boxes, kept there and fused per window, the peak stays near what the frame's own images need."""
    import tracemalloc

    from panoptic_perception.core.semantic_instance_fusion import FusionConfig, fuse
    from panoptic_perception.core.preprocess import Geometry

    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(1000, 2, generator=generator) * torch.tensor([600.0, 330.0])
    detection = {
        "boxes": torch.cat([corners, corners + 4 + torch.rand(1000, 2, generator=generator) * 20], 1),
        "scores": torch.rand(1000, generator=generator) * 0.5 + 0.5,
        "labels": torch.randint(1, len(THING_IDS) + 1, (1000,), generator=generator),
        "masks": torch.rand(1000, 1, 28, 28, generator=generator),
    }
    geometry = Geometry.resize((1920, 1080), (640, 352))
    semantic = np.full((1080, 1920), 7, np.uint8)
    semantic[300:700] = 26  # cars under most boxes
    tracemalloc.start()
    instances = small_backend._instances(detection, geometry, 0.5, 0.5)
    fused = fuse(semantic, instances, CITYSCAPES, FusionConfig())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(instances) == 1000 and isinstance(instances.masks, tuple)
    assert sum(mask.size for mask in instances.masks) < 1000 * 80 * 80  # boxes up to 72x72 pixels
    assert fused.panoptic.shape == (1080, 1920)
    assert peak < 150e6, f"peak {peak / 1e6:.0f} MB"  # 47 MB measured; 2 GB with a full mask each
