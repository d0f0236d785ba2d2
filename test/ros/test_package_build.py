"""The ROS 2 package builds and installs as colcon would (CMake + ament), and runs from the install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
PREFIX = Path(sys.prefix)
if shutil.which("cmake") is None or not (PREFIX / "share" / "ament_cmake").is_dir():
    pytest.skip("cmake and ament_cmake are needed to build the package", allow_module_level=True)

SOURCES = ("CMakeLists.txt", "package.xml", "msg", "panoptic_perception", "scripts", "launch", "config")


def test_cmake_build_installs_library_messages_executable_and_share_files(tmp_path):
    # A copy of the sources: CMake refuses include folders of the (in-tree) venv inside the source tree.
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    install = tmp_path / "install"
    env = {**os.environ, "AMENT_PREFIX_PATH": str(PREFIX), "CMAKE_PREFIX_PATH": str(PREFIX)}
    for step in (
        ["cmake", "-S", str(source), "-B", str(tmp_path / "build"), f"-DCMAKE_INSTALL_PREFIX={install}",
         f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
        ["cmake", "--build", str(tmp_path / "build"), "-j", "2"],
        ["cmake", "--install", str(tmp_path / "build")],
    ):
        done = subprocess.run(step, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    package = site / "panoptic_perception"
    assert "pkgutil.extend_path" in (package / "__init__.py").read_text(), "the library's __init__.py, not rosidl's"
    assert (package / "msg" / "_driving_perception.py").is_file() and (package / "weights" / "twinlitenet_synthetic.pth").is_file()
    assert os.access(install / "lib" / "panoptic_perception" / "perception_node", os.X_OK)
    share = install / "share" / "panoptic_perception"
    for name in ("package.xml", "launch/perception.launch.py", "msg/DrivingPerception.msg"):
        assert (share / name).is_file(), name
    assert sorted(p.name for p in (share / "config").iterdir()) == sorted(p.name for p in (REPO / "config").iterdir())
    assert not (package / "training" / "configs").exists(), "training configs are run from a source checkout"

    # The installed package imports from the install folder (not from this checkout) with its messages.
    code = ("import panoptic_perception, panoptic_perception.msg as m, panoptic_perception.ros.node;"
            "from ament_index_python.packages import get_package_share_directory as share;"
            "print(panoptic_perception.__file__); print(m.DrivingPerception.__module__); print(share('panoptic_perception'))")
    run_env = {**env, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": f"{install}:{PREFIX}",
               "LD_LIBRARY_PATH": f"{install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    done = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    file, module, share_dir = done.stdout.split()
    assert file == str(package / "__init__.py") and module.startswith("panoptic_perception.msg")
    assert share_dir == str(share)
