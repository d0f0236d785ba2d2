"""The command line as a whole: errors (one clear line, exit 2; a bug's traceback), the entry points, global options."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from panoptic_perception.cli import main


@pytest.mark.parametrize(
    "argv, message",
    [
        (["infer", "/nonexistent/x.jpg", "--output", "OUT"], "input not found: /nonexistent/x.jpg"),
        (["infer", "--backend", "nope", "IMG", "--output", "OUT"], "unknown backend 'nope'"),
        (["infer", "--weights", "/nonexistent.pth", "IMG", "--output", "OUT"], "weights file not found"),
        (["train", "--config", "/nonexistent.yaml"], "config file not found"),
        (["train", "--config", "a.yaml", "--config", "b.yaml", "--output-dir", "x"], "--output-dir applies to one --config"),
        (["evaluate", "--data", "synthetic:3@8x8", "--output", "OUT"], "image size must be at least 16x16, got 8x8"),
    ],
)
def test_errors_print_one_line_and_exit_2(tmp_path, capsys, argv, message):
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    argv = [str(image) if a == "IMG" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("panoptic-perception: error:") and message in err[-1]


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--data", "synthetic:2", "--limit", "-1"], "argument --limit: expected a number >= 0, got -1"),
    (["demo", "--size", "0x0"], "argument --size: expected WIDTHxHEIGHT with positive sizes (e.g. 640x360), got '0x0'"),
    (["benchmark", "--size", "abc"], "argument --size: expected WIDTHxHEIGHT with positive sizes"),
])
def test_malformed_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["-q", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err.splitlines()[-1]


def test_backends_lists_capabilities(capsys):
    assert main(["backends"]) == 0
    assert "twinlitenet" in capsys.readouterr().out


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "panoptic_perception.cli", "backends"], capture_output=True, text=True, check=True)
    assert "drivable_area, lane_lines" in out.stdout


@pytest.mark.parametrize("argv", [["-q", "backends"], ["backends", "-q"], ["backends"]])
def test_global_options_go_before_or_after_the_command(argv):
    from panoptic_perception.cli import parse_args

    args = parse_args(argv)
    assert args.quiet == ("-q" in argv) and args.verbose is False


def test_a_package_error_is_one_line_without_a_traceback(tmp_path, capsys):
    assert main(["-q", "evaluate", "--backend", "nope", "--data", "synthetic:1@64x48", "--output", str(tmp_path / "r")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("panoptic-perception: error: unknown backend 'nope'")


def test_verbose_shows_the_traceback_of_a_package_error(tmp_path, capsys):
    assert main(["-v", "evaluate", "--backend", "nope", "--data", "synthetic:1@64x48", "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)") and "UnknownBackendError" in err
    assert err.strip().splitlines()[-1].startswith("panoptic-perception: error: unknown backend 'nope'")


def test_a_bug_is_not_caught_and_shows_its_traceback(small_weights, monkeypatch):
    """An exception that is neither the package's nor a file error is a bug: it reaches the interpreter,
    which prints its traceback (benchmark calls the backend outside any per-frame handling)."""
    from panoptic_perception.backends.twinlitenet import TwinLiteNetBackend

    def broken(self, image):
        return 1 / 0

    monkeypatch.setattr(TwinLiteNetBackend, "__call__", broken)
    with pytest.raises(ZeroDivisionError):
        main(["-q", "benchmark", "--weights", small_weights, "--runs", "1", "--warmup", "0", "--paths", "fast"])


def test_a_bug_in_the_command_line_prints_a_traceback_and_exits_1(tmp_path):
    """The same through the interpreter: a ValueError raised by no check of the package (a bug) is no longer
    turned into one line."""
    code = ("import sys; from panoptic_perception.cli import infer; "
            "infer.cmd_infer = lambda args: int('not a number'); "
            "from panoptic_perception.cli import main; sys.exit(main())")
    result = subprocess.run([sys.executable, "-c", code, "infer", "x.png", "--output", str(tmp_path)], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
    assert "ValueError: invalid literal for int()" in result.stderr and "panoptic-perception: error" not in result.stderr
