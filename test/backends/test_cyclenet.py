"""The cyclenet backend: its outputs, the fast path, checkpoints."""

from __future__ import annotations

import numpy as np
import torch
from support import CYCLENET_SMALL as SMALL
from support import small_cyclenet
from torch import nn

from panoptic_perception import create_backend
from panoptic_perception.backends import save_checkpoint
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.preprocess import Geometry
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.models.cyclenet import CycleNetConfig

ROAD = CITYSCAPES.id_of("road")


# -- backend -------------------------------------------------------------------------------------------------
def test_postprocess_gives_label_ids_at_the_input_resolution_and_road_as_drivable_area():
    backend = create_backend("cyclenet", allow_random_weights=True, fast=False, **SMALL)
    channel = {c.name: i for i, c in enumerate(CITYSCAPES.classes)}
    logits = torch.zeros(1, 19, 18, 32)
    logits[0, channel["sky"], :9] = 5.0  # top half sky
    logits[0, channel["road"], 9:, :16] = 5.0  # bottom left road
    logits[0, channel["car"], 9:, 16:] = 5.0  # bottom right car
    geometry = Geometry.resize((320, 180), (128, 72))
    result = backend.postprocess(logits, [geometry])[0]
    assert result.semantic.shape == result.drivable_mask.shape == (180, 320)
    assert result.semantic.dtype == result.drivable_mask.dtype == np.uint8
    assert (result.semantic[:80] == CITYSCAPES.id_of("sky")).all()
    assert (result.semantic[100:, :150] == ROAD).all() and (result.semantic[100:, 170:] == CITYSCAPES.id_of("car")).all()
    assert np.array_equal(result.drivable_mask, (result.semantic == ROAD).astype(np.uint8))


def test_backend_end_to_end_on_a_random_narrow_network():
    torch.manual_seed(3)
    backend = create_backend("cyclenet", allow_random_weights=True, fast=False, **SMALL)
    with torch.no_grad():  # spread the random logits so that several classes, road among them, appear
        backend.network.classifier.weight.mul_(50.0)
        backend.network.classifier.bias.zero_()
        backend.network.classifier.bias[0] = 1.0
    results = backend([generate_scene(1, 200, 120).image, generate_scene(2, 160, 90).image])
    assert [r.semantic.shape for r in results] == [(120, 200), (90, 160)]
    for result in results:
        assert set(np.unique(result.semantic).tolist()) <= set(CITYSCAPES.ids.tolist())
        assert np.array_equal(result.drivable_mask, (result.semantic == ROAD).astype(np.uint8))
        assert result.detections is None and result.lane_mask is None and result.panoptic is None
    assert any(r.drivable_mask.any() and not r.drivable_mask.all() for r in results), "road and other classes"
    assert backend.describe()["capabilities"] == ["drivable_area", "semantic"]


def test_fast_path_folds_every_batchnorm_and_equals_the_plain_path(tmp_path):
    network = small_cyclenet(seed=4)
    path = save_checkpoint(tmp_path / "small.pth", "cyclenet", network.state_dict(), SMALL)
    fast = create_backend("cyclenet", str(path))
    plain = create_backend("cyclenet", str(path), fast=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.network.modules())
    assert fast.network.aux_head is None and plain.network.aux_head is not None
    batch = torch.rand(2, 3, 72, 128)
    with torch.no_grad():
        folded = fast.forward(batch.contiguous(memory_format=torch.channels_last))
        unfolded = plain.forward(batch)
    assert torch.allclose(folded, unfolded, atol=1e-4 * unfolded.abs().max().item())
    image = generate_scene(5, 160, 90).image
    agreement = (fast(image).semantic == plain(image).semantic).mean()
    assert agreement > 0.99, agreement


def test_checkpoint_round_trip_is_exact(tmp_path):
    network = small_cyclenet(seed=6)
    path = save_checkpoint(tmp_path / "small.pth", "cyclenet", network.state_dict(), SMALL)
    loaded = create_backend("cyclenet", str(path), fast=False)
    assert loaded.config == CycleNetConfig(**SMALL) and loaded.input_size == (128, 72)
    state = loaded.network.state_dict()
    assert state.keys() == network.state_dict().keys()
    for name, value in network.state_dict().items():
        assert torch.equal(state[name], value), name
    batch = torch.rand(1, 3, 72, 128)
    with torch.no_grad():
        assert torch.equal(loaded.network(batch), network(batch))
