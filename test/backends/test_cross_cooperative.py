"""The cross_cooperative backend: its outputs, the output option, the fast path and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import CROSS_COOPERATIVE_SMALL as SMALL
from support import small_cross_cooperative as small_network
from torch import nn

import panoptic_perception.backends.cross_cooperative  # noqa: F401  (registers the backend)
from panoptic_perception import create_backend
from panoptic_perception.backends import save_checkpoint
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.types import Capability
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.models.cross_cooperative import CrossCooperativeConfig, ensemble_scores


def test_backend_produces_cityscapes_label_ids_at_the_input_resolution():
    torch.manual_seed(0)
    backend = create_backend("cross_cooperative", allow_random_weights=True, fast=False, **SMALL)
    assert backend.capabilities == frozenset({Capability.SEMANTIC}) and backend.label_map is CITYSCAPES
    assert backend.input_size == (96, 64) and backend.config.output == "ensemble"
    result = backend(generate_scene(1, 150, 100).image)
    assert result.semantic.shape == (100, 150) and result.semantic.dtype == np.uint8
    assert set(np.unique(result.semantic).tolist()) <= set(CITYSCAPES.ids.tolist())
    assert result.panoptic is None and result.detections is None and result.drivable_mask is None


@pytest.mark.parametrize("output", ["top", "bottom", "ensemble"])
def test_output_option_selects_a_network_or_the_softmax_ensemble(output):
    network = small_network(seed=3)
    backend = create_backend("cross_cooperative", network=network, fast=False, **SMALL, output=output)
    batch = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        scores, logits = backend.finish(backend.forward(batch), batch), network(batch)
    expected = {"top": logits.top, "bottom": logits.bottom,
                "ensemble": logits.top.softmax(1) + logits.bottom.softmax(1)}[output]
    torch.testing.assert_close(scores, expected)
    if output == "ensemble":
        torch.testing.assert_close(scores.sum(1), torch.full((2, 64, 96), 2.0))
        torch.testing.assert_close(ensemble_scores(logits), expected)


def test_fast_path_folds_every_batchnorm_and_the_checkpoint_round_trip_is_exact(tmp_path):
    config = {**SMALL, "connection2": "one_way", "output": "top"}
    network = small_network(seed=5, connection2="one_way")
    path = save_checkpoint(tmp_path / "small.pth", "cross_cooperative", network.state_dict(), config)
    fast = create_backend("cross_cooperative", str(path))
    plain = create_backend("cross_cooperative", str(path), fast=False)
    assert plain.config == CrossCooperativeConfig(**config)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in plain.network.modules())
    assert batchnorms > 200 and not any(isinstance(m, nn.BatchNorm2d) for m in fast.network.modules())
    depthwise = fast.network.top_backbone.blocks[5].stack["conv1"].conv_dw
    assert depthwise.groups == depthwise.in_channels and depthwise.bias is not None, "depthwise BatchNorms folded"
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        original, unfolded, folded = network(x), plain.network(x), fast.network(x)
    for name in ("top", "bottom"):
        assert torch.equal(getattr(unfolded, name), getattr(original, name)), "the checkpoint restores the network"
        expected = getattr(unfolded, name)
        torch.testing.assert_close(getattr(folded, name), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    image = generate_scene(4, 96, 64).image
    in_memory = create_backend("cross_cooperative", network=network, fast=False, **config)
    assert np.array_equal(plain(image).semantic, in_memory(image).semantic)
    assert (fast(image).semantic == plain(image).semantic).mean() > 0.99
