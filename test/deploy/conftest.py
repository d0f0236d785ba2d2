"""Fixtures of the deployment tests."""

from __future__ import annotations

import pytest
import torch
from support import randomize_norms_

from panoptic_perception.backends import save_checkpoint
from panoptic_perception.models.cross_cooperative import CrossCooperativeConfig, CrossCooperativeNetwork

CROSS_COOPERATIVE = dict(top_width=0.125, bottom_width=0.125, head_channels=16, reduced_channels=8, input_width=96,
                         input_height=64)


@pytest.fixture(scope="session")
def cross_cooperative_checkpoint(tmp_path_factory) -> str:
    """A narrow random cross_cooperative checkpoint (non-trivial BatchNorms) at 96x64."""
    torch.manual_seed(3)
    network = randomize_norms_(CrossCooperativeNetwork(CrossCooperativeConfig(**CROSS_COOPERATIVE)), 3)
    path = tmp_path_factory.mktemp("cross_cooperative") / "small.pth"
    return str(save_checkpoint(path, "cross_cooperative", network.state_dict(), CROSS_COOPERATIVE))
