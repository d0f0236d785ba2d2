"""The Backend's named constructors and what create_backend picks from its arguments."""

from __future__ import annotations

import pytest
import torch

from panoptic_perception.backends import WeightsError, create_backend
from panoptic_perception.backends.twinlitenet import TwinLiteNetBackend
from panoptic_perception.models.twinlitenet import TwinLiteNet


def test_from_network_runs_the_module_as_it_is():
    network = TwinLiteNet().train()
    backend = TwinLiteNetBackend.from_network(network, input_size=(64, 48))
    assert backend.network is network and network.training  # not copied, not put in eval mode
    assert (backend.fast, backend.runtime, backend.weights_info.source) == (False, "torch", "in-memory network")
    assert create_backend("twinlitenet", network=network, fast=True).network is network


def test_from_checkpoint_loads_optimises_and_records_the_weights():
    plain = TwinLiteNetBackend.from_checkpoint(fast=False)
    fast = TwinLiteNetBackend.from_checkpoint()
    assert plain.weights_info.source == fast.weights_info.source == "bundled"
    assert not plain.channels_last and fast.channels_last and fast.fast
    assert sum(p.numel() for p in fast.network.parameters()) < sum(p.numel() for p in plain.network.parameters())
    assert not any(p.requires_grad for p in plain.network.parameters()) and not plain.network.training


def test_create_backend_picks_the_constructor_and_refuses_contradictions(tmp_path):
    with pytest.raises(ValueError, match="either weights or a network"):
        create_backend("twinlitenet", weights="w.pth", network=TwinLiteNet())
    scripted = tmp_path / "twinlitenet.pt"
    torch.jit.script(TwinLiteNet().eval()).save(str(scripted))
    with pytest.raises(WeightsError, match="TorchScript file; backend twinlitenet needs a state dict"):
        create_backend("twinlitenet", str(scripted))
    with pytest.raises(ValueError, match="unknown TwinLiteNetConfig options: runtime"):
        create_backend("twinlitenet", runtime="onnxruntime")  # runtimes are attached by panoptic_perception.create_backend

