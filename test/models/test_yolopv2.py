"""YOLOPv2: the network's size, its official export interface, its training outputs and its re-parameterisation."""

from __future__ import annotations

import torch
from support import assert_reparameterizing_twice_equals_once
from support import randomized_yolopv2 as randomized

from panoptic_perception.models.yolopv2 import ANCHORS, FOLDED_IMPLICIT, MERGED_REPCONVS, YOLOPv2
from panoptic_perception.nn import count_parameters
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS, reparameterize

SMALL = {"width": 0.25, "depth": 0.33}


def test_full_network_has_the_papers_parameter_count():
    network = YOLOPv2()
    trained, fused = count_parameters(network), count_parameters(reparameterize(network).network)
    for count in (trained, fused):
        assert abs(count / 38.9e6 - 1) < 0.03, count
    assert any(m.groups == 2 for m in network.stage4.modules() if isinstance(m, torch.nn.Conv2d)), "E-ELAN group conv"


def test_export_mode_returns_the_official_interface():
    network = YOLOPv2(**SMALL).eval()
    network.export = True
    with torch.no_grad():
        (pred, anchor_grid), seg, ll = network(torch.rand(2, 3, 384, 640))
    assert [tuple(p.shape) for p in pred] == [(2, 255, 48, 80), (2, 255, 24, 40), (2, 255, 12, 20)]
    assert [tuple(a.shape) for a in anchor_grid] == [(1, 3, 1, 1, 2)] * 3
    assert torch.equal(torch.stack(anchor_grid).flatten(), torch.tensor(ANCHORS, dtype=torch.float32).flatten())
    assert seg.shape == (2, 2, 384, 640) and ll.shape == (2, 1, 384, 640)
    assert 0 <= ll.min() and ll.max() <= 1, "lane output is a probability"


def test_training_mode_returns_per_level_predictions():
    network = YOLOPv2(num_classes=3, **SMALL)
    out = network(torch.rand(1, 3, 128, 192))
    assert [tuple(d.shape) for d in out.detection] == [(1, 3, 16, 24, 8), (1, 3, 8, 12, 8), (1, 3, 4, 6, 8)]
    assert out.drivable.shape == (1, 2, 128, 192) and out.lane.shape == (1, 1, 128, 192)


def test_reparameterizing_computes_the_same_and_twice_equals_once():
    network = randomized(YOLOPv2(**SMALL))
    network.export = True
    changes = assert_reparameterizing_twice_equals_once(network, torch.rand(1, 3, 128, 192), tolerance=1e-3)
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    merged = sum(isinstance(m, torch.nn.BatchNorm2d) for rep in (network.rep3, network.rep4, network.rep5)
                 for m in rep.modules())
    assert changes == {FOLDED_BATCHNORMS: batchnorms - merged, MERGED_REPCONVS: 3, FOLDED_IMPLICIT: 1}
