"""The files behind the runtimes: what the cache key covers, a damaged cached export made again, a file
exported without a dynamic batch, the modes of written files, and the providers ONNX Runtime uses."""

from __future__ import annotations

import inspect
import logging
import os
import stat
from pathlib import Path

import onnxruntime
import pytest
import torch

from panoptic_perception import create_backend
from panoptic_perception.backends.base import Backend
from panoptic_perception.backends.twinlitenet import TwinLiteNetBackend
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.deploy import ExportError
from panoptic_perception.deploy.onnx_export import check_batch, code_files, read_metadata, replace_readable
from panoptic_perception.deploy.onnxruntime import OnnxRuntimeNetwork

SIZE = (160, 96)  # a small TwinLiteNet input: exports in seconds


def test_the_cache_key_covers_the_network_and_the_default_forward_in_backends_base():
    from panoptic_perception.models.twinlitenet import TwinLiteNet

    files = code_files(inspect.getfile(TwinLiteNetBackend))
    assert Path(inspect.getfile(TwinLiteNetBackend)) in files
    assert Path(inspect.getfile(TwinLiteNet)).resolve() in [f.resolve() for f in files], "the network's code"
    assert Path(inspect.getfile(Backend)).resolve() in [f.resolve() for f in files], "Backend.forward is exported"
    assert "forward" not in vars(TwinLiteNetBackend), "TwinLiteNet exports the inherited forward"


def test_a_damaged_cached_export_is_exported_again_and_a_damaged_given_file_refused(onnx_cache, caplog):
    path = Path(create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime").describe()["onnx"])
    size = path.stat().st_size
    with path.open("r+b") as f:  # `truncate -s`: the graph's tail and the metadata are gone
        f.truncate(size // 2)
    with pytest.raises(ExportError, match="not a readable ONNX file|no network metadata"):
        create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime", onnx_path=str(path))
    with caplog.at_level(logging.WARNING, logger="panoptic_perception"):
        again = create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime")
    assert again.describe()["onnx"] == str(path) and path.stat().st_size == size, "the same file, whole again"
    assert "the cached export is unusable" in caplog.text and "exporting again" in caplog.text
    assert again(generate_scene(0, 320, 180).image).drivable_mask is not None
    path.with_suffix(".sha256").unlink()  # a file cached before the sidecars: said so, and exported again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="panoptic_perception"):
        create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime")
    assert f"{path.name} has no {path.stem}.sha256" in caplog.text and path.with_suffix(".sha256").is_file()


@pytest.fixture
def batch_one_file(twinlitenet_batch_one):
    """(backend, path): the bundled TwinLiteNet at 160x96 exported as `export` does without --dynamic-batch
    (conftest.py)."""
    backend, path = twinlitenet_batch_one
    assert backend.input_size == SIZE
    return backend, path


def test_a_file_without_dynamic_batch_runs_one_image_at_a_time_and_refuses_batches(batch_one_file):
    backend, path = batch_one_file
    assert read_metadata(path)["dynamic_batch"] == "false"
    ort = create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime", onnx_path=str(path))
    assert ort.run_network.fixed_batch == 1
    images = [generate_scene(seed, 320, 180).image for seed in (0, 1)]
    for image in images:  # one at a time, as infer, evaluate, benchmark and the node run it
        assert (ort(image).drivable_mask == backend(image).drivable_mask).mean() >= 0.999
    with pytest.raises(ValueError, match=r"exported for a batch of 1 \(without --dynamic-batch\), got 2 images: "
                                         "export it with --dynamic-batch"):
        ort.process(images)
    check_batch(path, None, 5)  # a dynamic batch takes any size


@pytest.fixture
def umask():
    """Sets the process umask for a test (``umask(value)``), restored afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


def test_written_files_are_readable_as_the_umask_says(batch_one_file, umask, tmp_path):
    current = os.umask(0o022)
    os.umask(current)
    _, path = batch_one_file  # exported (mkstemp, then renamed) under the process's umask
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current
    umask(0o027)
    temporary = tmp_path / "file.partial"
    temporary.write_bytes(b"data")
    temporary.chmod(0o600)  # as mkstemp makes it
    replace_readable(temporary, tmp_path / "file")
    assert stat.S_IMODE((tmp_path / "file").stat().st_mode) == 0o640 and not temporary.exists()


def test_a_cuda_device_without_the_cuda_provider_is_a_warning_and_describe_names_the_providers(batch_one_file, caplog):
    backend, path = batch_one_file
    ort = create_backend("twinlitenet", input_size=SIZE, runtime="onnxruntime", onnx_path=str(path))
    assert ort.describe()["providers"] == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with caplog.at_level(logging.WARNING, logger="panoptic_perception"):
        network = OnnxRuntimeNetwork(path, torch.device("cuda"), read_metadata(path)["outputs"])  # not run: no CUDA here
    assert network.providers == ["CPUExecutionProvider"]
    assert "device cuda: this onnxruntime" in caplog.text and "runs with CPUExecutionProvider on the CPU" in caplog.text


def test_onnxruntime_takes_torchs_thread_count_when_its_session_is_made(batch_one_file):
    """So the node's `threads` reaches ONNX Runtime at the next configure or backend reload (documented)."""
    _, path = batch_one_file
    outputs, saved = read_metadata(path)["outputs"], torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        running = OnnxRuntimeNetwork(path, torch.device("cpu"), outputs)
        torch.set_num_threads(2)
        assert running.session.get_session_options().intra_op_num_threads == 1, "a made session keeps its count"
        assert OnnxRuntimeNetwork(path, torch.device("cpu"), outputs).session.get_session_options().intra_op_num_threads == 2
    finally:
        torch.set_num_threads(saved)


def test_a_damaged_cached_int8_model_is_quantized_again_not_used(onnx_cache):
    """Bytes of the cached INT8 model's largest weight overwritten (the file still parses, its metadata
    intact): the next backend on the same frames ran it (found in review); now it is quantized again."""
    import numpy as np
    import onnx

    from panoptic_perception import create_backend

    options = dict(runtime="onnxruntime", precision="int8", calibration="synthetic:2@320x180+0", input_size=(160, 96))
    images = [generate_scene(seed, 320, 180).image for seed in (5_000_100, 5_000_101)]
    first = create_backend("twinlitenet", **options)
    expected = first.process(images)
    path = first.run_network.path
    largest = max(onnx.load(str(path)).graph.initializer, key=lambda tensor: len(tensor.raw_data)).raw_data
    data = bytearray(open(path, "rb").read())
    start = data.find(largest)
    assert start > 0 and len(largest) > 1000
    data[start:start + len(largest)] = bytes(len(largest))  # the weight zeroed, the file the same length
    open(path, "wb").write(data)

    again = create_backend("twinlitenet", **options)
    results = again.process(images)
    agreement = np.mean([(a.drivable_mask == b.drivable_mask).mean() for a, b in zip(results, expected)])
    assert agreement >= 0.999, f"the damaged cached INT8 model was run: drivable pixels {agreement:.3f} as before"
