"""``export``: a checked ONNX file, and the combinations of options that cannot work (one clear line, exit 2)."""

from __future__ import annotations

from panoptic_perception.cli import main


def test_export_writes_a_checked_onnx_file(tmp_path, small_weights, capsys):
    import onnx

    output = tmp_path / "tiny.onnx"
    assert main(["export", "--weights", small_weights, "--format", "onnx", "--size", "96x56", "--dynamic-batch",
                 "--output", str(output)]) == 0
    assert capsys.readouterr().out.strip() == (f"{output}: twinlitenet network part, ONNX opset 18, input images "
                                               "(N, 3, 56, 96) float32 RGB in [0, 1], dynamic batch; onnx.checker passed")
    model = onnx.load(str(output))
    batch, *rest = model.graph.input[0].type.tensor_type.shape.dim
    assert batch.dim_param and [d.dim_value for d in rest] == [3, 56, 96]


def test_export_of_a_tensorrt_engine_needs_cuda(small_weights, capsys):
    assert main(["export", "--weights", small_weights, "--format", "tensorrt", "--size", "96x56"]) == 2
    assert "runtime tensorrt needs a CUDA device, got cpu" in capsys.readouterr().err


def test_export_refuses_options_its_format_would_ignore(tmp_path, capsys):
    common = ["export", "--backend", "twinlitenet", "--size", "160x96"]
    for extra, message in (
        (["--format", "onnx", "--precision", "fp16"], "--precision is an option of --format tensorrt"),
        (["--precision", "fp32"], "--precision is an option of --format tensorrt"),  # --format onnx is the default
        (["--format", "tensorrt", "--output", str(tmp_path / "m.onnx")], "--output and --dynamic-batch are options of --format onnx"),
        (["--format", "tensorrt", "--dynamic-batch"], "--output and --dynamic-batch are options of --format onnx"),
    ):
        assert main([*common, *extra]) == 2, extra
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"panoptic-perception: error: {message}"), (extra, line)
    assert not list(tmp_path.iterdir()), "nothing written"
