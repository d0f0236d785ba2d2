"""The re-parameterisation walker: one copy, every module's own fusion, parents first, each module once."""

from __future__ import annotations

import torch
from support import randomize_norms_
from torch import nn

from panoptic_perception.nn.layers import ConvNormAct
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS, Changes, Reparameterized, reparameterize


class Recorder(nn.Module):
    """A module whose fusion only records that it ran (into a list shared by the test)."""

    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__()
        self.name, self.calls = name, calls

    def reparameterize_(self) -> Changes:
        self.calls.append(self.name)
        return Changes({"recorded": 1})


class DropsItsChild(nn.Module):
    """A module whose fusion removes its child, as CycleNet drops its auxiliary head."""

    def __init__(self, child: nn.Module) -> None:
        super().__init__()
        self.child = child

    def reparameterize_(self) -> Changes:
        if self.child is None:
            return Changes()
        self.child = None
        return Changes({"children dropped": 1})


def test_the_copy_is_fused_in_eval_mode_and_the_original_left_as_it_was():
    torch.manual_seed(0)
    network = randomize_norms_(nn.Sequential(ConvNormAct(3, 4, 3), nn.Sequential(ConvNormAct(4, 5, 1)))).train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    fused, changes = reparameterize(network)
    assert changes == {FOLDED_BATCHNORMS: 2} and not fused.training and network.training
    assert network.state_dict().keys() == before.keys()
    assert all(torch.equal(network.state_dict()[k], v) for k, v in before.items())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), network.eval()(x), rtol=1e-5, atol=1e-5)


def test_parents_fuse_before_their_children_in_order_and_a_dropped_child_is_not_visited():
    calls: list[str] = []
    network = nn.Sequential(Recorder("first", calls), DropsItsChild(Recorder("dropped", calls)),
                            nn.Sequential(Recorder("nested", calls)), Recorder("last", calls))
    fused, changes = reparameterize(network)
    assert fused[0].calls == ["first", "nested", "last"] and calls == [], "the copy's modules record, not the original's"
    assert changes == {"recorded": 3, "children dropped": 1}


def test_a_shared_module_fuses_once_and_a_fused_network_fuses_to_itself():
    torch.manual_seed(1)
    shared = ConvNormAct(4, 4, 3)
    network = randomize_norms_(nn.Sequential(shared, nn.ReLU(), shared))
    fused, changes = reparameterize(network)
    assert changes == {FOLDED_BATCHNORMS: 1} and fused[0] is fused[2]
    again = reparameterize(fused)
    assert again.changes == {} and again.summary() == "nothing"
    assert again.network.state_dict().keys() == fused.state_dict().keys()


def test_summary_names_every_change_with_its_count():
    summary = Reparameterized(nn.Identity(), Changes({FOLDED_BATCHNORMS: 13, "RepConvs merged": 3})).summary()
    assert summary == f"{FOLDED_BATCHNORMS}: 13; RepConvs merged: 3"
