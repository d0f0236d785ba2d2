"""The synthetic scenes' command line: pictures written, speed measured, and ``python -m`` runs it."""

from __future__ import annotations

import subprocess
import sys

import cv2

from panoptic_perception.data.synthetic import main


def test_command_line_saves_pictures_and_benchmarks(tmp_path, capsys):
    assert main(["--save", str(tmp_path), "--count", "2", "--width", "160", "--height", "90"]) == 0
    panels = sorted(tmp_path.glob("*_panel.png"))
    assert len(panels) == 2
    assert cv2.imread(str(panels[0])).shape == (180, 320, 3)
    assert len(list(tmp_path.glob("*.png"))) == 10
    assert main(["--benchmark", "--frames", "3", "--width", "160", "--height", "90"]) == 0
    out = capsys.readouterr().out
    assert "frames/s" in out
    fps = float(out.split("frames/s")[0].split()[-1])
    assert fps > 0


def test_the_package_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "panoptic_perception.data.synthetic", "--benchmark", "--frames", "2",
                           "--width", "64", "--height", "36"], capture_output=True, text=True, check=True)
    assert "frames/s on one core" in done.stdout
