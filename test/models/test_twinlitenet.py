"""TwinLiteNet: the released architecture and key layout, and the re-parameterisation of §III-C."""

from __future__ import annotations

import torch
from support import assert_reparameterizing_twice_equals_once, randomize_norms_

from panoptic_perception.backends import read_checkpoint
from panoptic_perception.models.twinlitenet import DROPPED_POSITION_ATTENTION, PositionAttention, TwinLiteNet
from panoptic_perception.nn import count_parameters
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS, reparameterize


def randomized_network(seed: int = 0, pam_gamma: float = 0.3) -> TwinLiteNet:
    """A network with non-trivial BatchNorm statistics and attention scales (random weights are fine here)."""
    torch.manual_seed(seed)
    net = randomize_norms_(TwinLiteNet(), seed)
    with torch.no_grad():
        net.encoder.sa.gamma.fill_(pam_gamma)
        net.encoder.sc.gamma.fill_(0.5)
    return net


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


def test_reparameterizing_twice_equals_once_and_drops_a_negligible_attention_once():
    net = randomized_network(pam_gamma=-4.35e-20)
    changes = assert_reparameterizing_twice_equals_once(net, torch.rand(1, 3, 64, 96))
    dropped = [what for what in changes if what.startswith(DROPPED_POSITION_ATTENTION)]
    assert changes[FOLDED_BATCHNORMS] == 13 and len(dropped) == 1 and "gamma=-4.35e-20" in dropped[0]
    assert isinstance(net.encoder.sa, PositionAttention), "the original network is left as it was"


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
