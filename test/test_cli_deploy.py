"""The command line's deployment arguments: combinations that cannot work are one clear line, exit 2."""

from __future__ import annotations

from panoptic_perception.cli import main


def test_benchmark_refuses_one_onnx_file_for_both_paths(tmp_path, capsys):
    onnx = str(tmp_path / "twinlitenet.onnx")  # refused before it is read
    assert main(["benchmark", "--runtime", "onnxruntime", "--onnx", onnx]) == 2  # default --paths fast,plain
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("panoptic-perception: error: --onnx is the export of one path: give --paths fast, or --paths plain "
                    "for a file exported with --plain")


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
