"""Fixtures of the deployment tests."""

from __future__ import annotations

import pytest
import torch
from support import randomize_norms_

from panoptic_perception import create_backend
from panoptic_perception.backends import save_checkpoint
from panoptic_perception.backends.cross_cooperative import CrossCooperativeConfig, CrossCooperativeNetwork
from panoptic_perception.deploy import export_onnx

CROSS_COOPERATIVE = dict(top_width=0.125, bottom_width=0.125, head_channels=16, reduced_channels=8, input_width=96,
                         input_height=64)


@pytest.fixture(scope="session")
def cross_cooperative_checkpoint(tmp_path_factory) -> str:
    """A narrow random cross_cooperative checkpoint (non-trivial BatchNorms) at 96x64."""
    torch.manual_seed(3)
    network = randomize_norms_(CrossCooperativeNetwork(CrossCooperativeConfig(**CROSS_COOPERATIVE)), 3)
    path = tmp_path_factory.mktemp("cross_cooperative") / "small.pth"
    return str(save_checkpoint(path, "cross_cooperative", network.state_dict(), CROSS_COOPERATIVE))


@pytest.fixture(scope="session")
def twinlitenet_batch_one(tmp_path_factory):
    """(backend, path): the bundled TwinLiteNet at 160x96 exported as `export` does without --dynamic-batch
    (made once for test_onnx_export.py and test_runtime_files.py, which only read it)."""
    backend = create_backend("twinlitenet", input_size=(160, 96))
    return backend, export_onnx(backend, tmp_path_factory.mktemp("export") / "twinlitenet.onnx")
