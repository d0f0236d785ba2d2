"""ONNX export: the checked file and its metadata, output nesting, and refusing files of other networks."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from panoptic_perception import create_backend
from panoptic_perception.deploy import OPSET, ExportError, export_onnx
from panoptic_perception.deploy.onnx_export import check_exported, flatten_outputs, read_metadata, unflatten_outputs
from panoptic_perception.nn import reparameterize

SIZE = (160, 96)  # a small TwinLiteNet input: exports in seconds


@pytest.fixture
def exported(twinlitenet_batch_one):
    """(backend, path): the bundled TwinLiteNet at 160x96 exported with batch 1 (conftest.py)."""
    backend, path = twinlitenet_batch_one
    assert backend.input_size == SIZE
    return backend, path


def test_outputs_are_flattened_depth_first_and_restored():
    a, b, c, d = (torch.full((1,), float(i)) for i in range(4))
    tensors, structure = flatten_outputs(((a, [b, c]), d))
    assert [t.item() for t in tensors] == [0, 1, 2, 3] and structure == [[0, [1, 2]], 3]
    assert json.loads(json.dumps(structure)) == structure
    assert unflatten_outputs(["a", "b", "c", "d"], structure) == [["a", ["b", "c"]], "d"]
    assert flatten_outputs(a) == ([a], 0)
    with pytest.raises(ExportError, match="tensors in tuples or lists, got dict"):
        flatten_outputs({"boxes": a})


def test_export_is_a_checked_onnx_model_with_its_opset_shapes_and_metadata(exported):
    backend, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == OPSET == 18
    (images,) = model.graph.input
    dims = [d.dim_value for d in images.type.tensor_type.shape.dim]
    assert images.name == "images" and dims == [1, 3, SIZE[1], SIZE[0]]  # batch 1 without --dynamic-batch
    assert [o.name for o in model.graph.output] == ["output_0", "output_1"]
    metadata = read_metadata(path)
    assert metadata["backend"] == "twinlitenet" and metadata["input_size"] == "160x96"
    assert json.loads(metadata["outputs"]) == [0, 1] and metadata["dynamic_batch"] == "false"
    assert metadata["torch"] == torch.__version__ and len(metadata["network"]) == 64
    assert check_exported(path, backend) == metadata
    assert not list(path.parent.glob("*.partial")), "no temporary file left"


def test_a_file_of_another_network_size_or_backend_is_refused(exported, tmp_path):
    _, path = exported
    with pytest.raises(ExportError, match="exported from another network"):
        create_backend("twinlitenet", input_size=SIZE, allow_random_weights=True, runtime="onnxruntime", onnx_path=str(path))
    with pytest.raises(ExportError, match="takes 160x96 inputs, the backend 320x184"):
        create_backend("twinlitenet", runtime="onnxruntime", onnx_path=str(path))
    with pytest.raises(ExportError, match="an export of backend 'twinlitenet', not 'cyclenet'"):
        create_backend("cyclenet", input_size=SIZE, runtime="onnxruntime", onnx_path=str(path))
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    with pytest.raises(ExportError, match="not exported by panoptic-perception"):
        create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime", onnx_path=str(foreign))
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime", onnx_path=str(tmp_path / "missing.onnx"))


def test_a_given_file_runs_in_onnxruntime_like_eager(exported):
    backend, path = exported
    ort = create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime", onnx_path=str(path))
    assert ort.describe()["onnx"] == str(path)
    batch = torch.rand(1, 3, SIZE[1], SIZE[0])
    with torch.inference_mode():
        for a, e in zip(ort.run_network(batch), backend.forward(batch), strict=True):
            assert (a - e).abs().max() <= 1e-5 * e.abs().max()


def test_a_torchscript_network_is_refused_with_the_reason(yolopv2_small_checkpoint, tmp_path):
    _, network = yolopv2_small_checkpoint
    fused = reparameterize(network).network
    fused.export = True  # the official file's interface
    traced = torch.jit.trace(fused, torch.rand(1, 3, 192, 320), strict=False)
    traced.save(str(tmp_path / "yolopv2.pt"))
    backend = create_backend("yolopv2", str(tmp_path / "yolopv2.pt"), input_size=(320, 192))
    with pytest.raises(ExportError, match="TorchScript file, which torch cannot export"):
        export_onnx(backend, tmp_path / "yolopv2.onnx")
