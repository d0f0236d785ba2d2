"""TwinLiteNet: the released architecture, official-weight parity, and the fast path's equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panoptic_perception.backends import create_backend, read_checkpoint
from panoptic_perception.core.io import read_image
from panoptic_perception.core.preprocess import prepare_batch
from panoptic_perception.models.twinlitenet import PositionAttention, TwinLiteNet
from panoptic_perception.nn import count_parameters
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS, reparameterize

PARITY_IMAGE = "caeb782d-4a20b7c4"


def randomized_network(seed: int = 0, pam_gamma: float = 0.3) -> TwinLiteNet:
    """A network with non-trivial BatchNorm statistics and attention scales (random weights are fine here)."""
    torch.manual_seed(seed)
    net = TwinLiteNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        net.encoder.sa.gamma.fill_(pam_gamma)
        net.encoder.sc.gamma.fill_(0.5)
    return net.eval()


def test_parameter_count_is_the_papers():
    assert count_parameters(TwinLiteNet()) == 439_633


def test_output_shapes_follow_the_input_size():
    net = TwinLiteNet().eval()
    with torch.no_grad():
        drivable, lane = net(torch.rand(2, 3, 96, 160))
    assert drivable.shape == lane.shape == (2, 2, 96, 160)


def test_official_checkpoint_keys_match_exactly(official_twinlitenet_weights):
    checkpoint = read_checkpoint(official_twinlitenet_weights)
    assert len(checkpoint.state_dict) == 183
    expected = TwinLiteNet().state_dict()
    assert set(checkpoint.state_dict) == set(expected)
    assert all(checkpoint.state_dict[k].shape == v.shape for k, v in expected.items())


def test_official_logits_parity(reference_dir, official_twinlitenet_weights):
    reference = np.load(reference_dir / "twinlitenet" / f"{PARITY_IMAGE}_tensors.npz")
    image = read_image(reference_dir / "images" / f"{PARITY_IMAGE}.jpg")
    batch, _ = prepare_batch([image], (640, 360))
    assert np.array_equal(batch.numpy(), reference["input"]), "pre-processing must match the official one exactly"

    backend = create_backend("twinlitenet", str(official_twinlitenet_weights), fast=False)
    with torch.inference_mode():
        drivable, lane = backend.network(batch)
    for name, logits in (("da_logits", drivable), ("ll_logits", lane)):
        official = reference[name]
        assert np.abs(logits.numpy() - official).max() < 1e-3, name
        agreement = (logits.argmax(1).numpy() == official.argmax(1)).mean()
        assert agreement >= 0.9999, f"{name}: masks agree on {agreement:.6f} of pixels"


def test_backend_masks_match_official_masks_at_network_resolution(reference_dir, official_twinlitenet_weights):
    reference = np.load(reference_dir / "twinlitenet" / f"{PARITY_IMAGE}_tensors.npz")
    image = read_image(reference_dir / "images" / f"{PARITY_IMAGE}.jpg")
    small = image[::2, ::2].copy()  # any input size works; here choose one where masks are compared 1:1
    backend = create_backend("twinlitenet", str(official_twinlitenet_weights), input_size=(640, 360))
    result = backend(np.ascontiguousarray(small))
    assert result.drivable_mask.shape == (360, 640) and result.drivable_mask.dtype == np.uint8
    # Different resize of the input (nearest 2x decimation) changes a few pixels: require close agreement.
    assert (result.drivable_mask == reference["da_logits"].argmax(1)[0]).mean() > 0.97
    assert set(np.unique(result.lane_mask)) <= {0, 1}


def test_fast_path_equals_plain_path_on_official_weights(reference_dir, official_twinlitenet_weights):
    image = read_image(reference_dir / "images" / f"{PARITY_IMAGE}.jpg")
    plain = create_backend("twinlitenet", str(official_twinlitenet_weights), fast=False)
    fast = create_backend("twinlitenet", str(official_twinlitenet_weights), fast=True)
    assert isinstance(plain.network.encoder.sa, PositionAttention)
    assert not isinstance(fast.network.encoder.sa, PositionAttention), "gamma=-4.35e-20 must be dropped"
    batch, _ = prepare_batch([image], (640, 360))
    with torch.inference_mode():
        for a, b in zip(plain.network(batch), fast.network(batch.contiguous(memory_format=torch.channels_last))):
            assert (a - b).abs().max() < 1e-3
    a, b = plain(image), fast(image)
    assert (a.drivable_mask == b.drivable_mask).mean() >= 0.9999
    assert (a.lane_mask == b.lane_mask).mean() >= 0.9999


def test_reparameterized_equals_original_with_attention_kept():
    net = randomized_network(pam_gamma=0.3)
    fused, changes = reparameterize(net)
    assert isinstance(fused.encoder.sa, PositionAttention), "a non-negligible position attention must stay"
    assert changes == {FOLDED_BATCHNORMS: 13}  # 7 CBRs and 6 decoder blocks; the ESP blocks' BNs stay
    assert count_parameters(fused) == 439_633 - 346  # every folded BN: 2C params become a C-channel bias
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(net(x), fused(x)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_position_attention_negligibility_bound():
    pam = PositionAttention(32)
    pam.gamma.data.fill_(-4.35e-20)
    assert pam.is_negligible()
    x = torch.randn(1, 32, 6, 10) * 5
    with torch.no_grad():
        assert torch.equal(pam(x), x), "the dropped branch must change nothing"
    pam.gamma.data.fill_(1e-6)
    assert not pam.is_negligible()
    with torch.no_grad():
        assert not torch.equal(pam(x), x)
