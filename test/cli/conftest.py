"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest
import torch

from panoptic_perception.backends import save_checkpoint
from panoptic_perception.models.twinlitenet import TwinLiteNet


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """A TwinLiteNet checkpoint with a small network input, so CLI tests run fast."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    return str(save_checkpoint(path, "twinlitenet", TwinLiteNet().state_dict(), {"input_width": 96, "input_height": 56}))
