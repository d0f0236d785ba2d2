"""The command line's deployment arguments: combinations that cannot work are one clear line, exit 2."""

from __future__ import annotations

from panoptic_perception.cli import main


def test_benchmark_refuses_one_onnx_file_for_both_paths(tmp_path, capsys):
    onnx = str(tmp_path / "twinlitenet.onnx")  # refused before it is read
    assert main(["benchmark", "--runtime", "onnxruntime", "--onnx", onnx]) == 2  # default --paths fast,plain
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("panoptic-perception: error: --onnx is the export of one path: give --paths fast, or --paths plain "
                    "for a file exported with --plain")
