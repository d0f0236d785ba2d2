"""The parts of the TensorRT runtime that need no GPU: batches in chunks, the fp16 graph of TensorRT 11, and
the modes of stored engines."""

from __future__ import annotations

import os
import stat

import onnx
import pytest
import torch

from panoptic_perception import create_backend
from panoptic_perception.deploy.tensorrt import (MAX_BATCH, batch_chunks, calibration_cache_path, engine_key, engine_path, fp16_model, join_chunks,
                                                 sort_topologically, store_engine)


def test_a_batch_is_split_into_chunks_of_at_most_the_engines_batch():
    assert batch_chunks(3, MAX_BATCH) == [slice(0, 3)]
    assert batch_chunks(8, 8) == [slice(0, 8)]
    assert batch_chunks(19, 8) == [slice(0, 8), slice(8, 16), slice(16, 19)]
    assert batch_chunks(2, 1) == [slice(0, 1), slice(1, 2)]
    with pytest.raises(ValueError, match="at least 1"):
        batch_chunks(0, 8)


def test_chunk_outputs_join_along_the_batch_and_shared_outputs_are_kept_once():
    batch = torch.arange(19 * 2, dtype=torch.float32).reshape(19, 2)
    grid = torch.ones(1, 4)  # the same for every chunk, as an anchor grid
    chunks = [[batch[part] * 10, grid] for part in batch_chunks(19, 8)]
    joined = join_chunks(chunks, [True, False])
    assert torch.equal(joined[0], batch * 10) and joined[1] is grid
    single = [[batch, grid]]
    assert join_chunks(single, [True, False])[0] is batch, "one chunk: no copy"


def test_topological_sort_puts_producers_first_and_keeps_a_sorted_graph_as_it_is():
    relu = onnx.helper.make_node("Relu", ["x"], ["a"], name="relu")
    neg = onnx.helper.make_node("Neg", ["a"], ["b"], name="neg")
    add = onnx.helper.make_node("Add", ["a", "b"], ["y"], name="add")
    value = lambda name: onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1])  # noqa: E731
    graph = onnx.helper.make_graph([add, neg, relu], "g", [value("x")], [value("y")])
    sort_topologically(graph)
    assert [n.name for n in graph.node] == ["relu", "neg", "add"]
    sort_topologically(graph)
    assert [n.name for n in graph.node] == ["relu", "neg", "add"]
    cyclic = onnx.helper.make_graph([onnx.helper.make_node("Neg", ["c"], ["d"]), onnx.helper.make_node("Neg", ["d"], ["c"])],
                                    "cyclic", [value("x")], [value("c")])
    with pytest.raises(ValueError, match="cycle"):
        sort_topologically(cyclic)


def test_the_fp16_graph_for_tensorrt_11_passes_the_onnx_checker(onnx_cache):
    # The cached dynamic-batch export the TensorRT runtime starts from (this session's test_runtime.py made it).
    path = create_backend("twinlitenet", input_size=(160, 96), runtime="onnxruntime").describe()["onnx"]
    assert path.startswith(str(onnx_cache))
    model = fp16_model(onnx.load(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT, "float32 in"
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}, "and out"
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer), "fp16 weights"


def test_a_stored_engine_and_its_sidecar_are_readable_as_the_umask_says(tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"an onnx graph")
    key = engine_key(onnx_file, "10.13.0", "GPU (sm_90)", "fp32")
    path = engine_path(tmp_path / "cache", onnx_file, key)
    saved = os.umask(0o022)
    try:
        store_engine(path, key, b"engine bytes")
    finally:
        os.umask(saved)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(path.with_suffix(".json").stat().st_mode) == 0o644


def test_the_tensorrt_calibration_cache_is_not_shared_by_two_networks_of_the_same_file_name(tmp_path):
    """`--onnx model.onnx` exported again after retraining (same name, other weights), calibrated on the same
    frames: the calibration cache was named by the file's stem and the frames only, so the new engine read
    the old network's scales (found in review)."""
    import numpy as np

    from panoptic_perception.deploy.quantize import CalibrationSet

    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    (tmp_path / "before" / "model.onnx").write_bytes(b"network trained once")
    (tmp_path / "after" / "model.onnx").write_bytes(b"network trained again")
    frames = CalibrationSet("frames/", (160, 96), [np.zeros((1, 3, 96, 160), np.float32)], ["a"], "ab" * 32)
    cache = tmp_path / "cache"
    assert calibration_cache_path(cache, tmp_path / "before" / "model.onnx", frames) != \
        calibration_cache_path(cache, tmp_path / "after" / "model.onnx", frames)
