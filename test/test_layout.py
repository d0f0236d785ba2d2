"""The package layout and the one-way data flow between sub-packages."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import panoptic_perception

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "panoptic_perception"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the package modules a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                names.add(f"{base}.{node.module}" if node.module else base)
            else:
                names.add(node.module)
    return names


def modules_under(*parts: str) -> list[Path]:
    return sorted((PACKAGE.joinpath(*parts)).rglob("*.py"))


def test_ros_package_manifest_matches_the_python_distribution():
    manifest = ET.parse(REPO / "package.xml").getroot()
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == "panoptic_perception"
    assert manifest.find("export/build_type").text == "ament_cmake"
    setup_version = re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text()).group(1)
    assert manifest.findtext("version") == setup_version == panoptic_perception.__version__
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "project(panoptic_perception)" in cmake and "install(DIRECTORY ${PROJECT_NAME}/" in cmake
    assert "install(PROGRAMS scripts/perception_node" in cmake
    for message in sorted((REPO / "msg").glob("*.msg")):  # every interface is generated
        assert f"msg/{message.name}" in cmake, message.name
    for folder in ("launch", "config", "msg", "test", "resource"):
        assert (REPO / folder).is_dir(), folder
    assert (REPO / "resource" / "panoptic_perception").is_file()


def test_config_holds_only_what_a_ros_user_configures():
    """Node parameter files (one per backend, and the multi-camera example), the RViz config and the DDS
    profile; training configs live beside training (panoptic_perception/training/configs/)."""
    import yaml

    from panoptic_perception.backends import list_backends

    files = sorted(p.name for p in (REPO / "config").iterdir())
    assert [name for name in files if name.endswith(".yaml")] == sorted(
        [f"{b}.yaml" for b in list_backends()] + ["multi_camera.yaml"])
    assert [name for name in files if not name.endswith(".yaml")] == ["fastdds_large_data.xml", "perception.rviz"]
    for name in files:
        if name.endswith(".yaml"):
            assert list(yaml.safe_load((REPO / "config" / name).read_text())["/**"]) == ["ros__parameters"], name
    assert list((PACKAGE / "training" / "configs").glob("*_synthetic.yaml")), "the training configs"


def test_core_has_no_network_code_and_nothing_but_ros_imports_ros():
    for path in modules_under("core"):
        for name in imported_modules(path):
            assert not name.startswith(("panoptic_perception.backends", "panoptic_perception.nn")), f"{path}: {name}"
    for path in PACKAGE.rglob("*.py"):
        if "ros" in path.relative_to(PACKAGE).parts[:1]:
            continue
        assert not any(n.split(".")[0] in ("rclpy", "rosidl_runtime_py") for n in imported_modules(path)), path


def test_networks_live_in_models_apart_from_their_backends():
    """models/ and nn/ hold the networks and import no adapter, runtime or application layer; backends/
    defines no network (its modules wrap the networks of models/)."""
    import importlib
    import inspect

    import torch

    layers = ("backends", "deploy", "training", "ros", "evaluation", "data", "cli", "demo")
    for path in modules_under("models") + modules_under("nn"):
        for name in imported_modules(path):
            assert not name.startswith(tuple(f"panoptic_perception.{layer}" for layer in layers)), f"{path}: {name}"
    for path in modules_under("nn"):
        assert not any(n.startswith("panoptic_perception.models") for n in imported_modules(path)), path
    for path in modules_under("backends"):
        module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
        networks = [name for name, value in vars(module).items() if inspect.isclass(value)
                    and issubclass(value, torch.nn.Module) and value.__module__ == module.__name__]
        assert not networks, f"{path} defines networks {networks}: they belong in models/"


def test_the_deploy_layer_builds_on_backends_never_the_reverse():
    """deploy/ attaches runtimes to built backends: backends/ (and models/, nn/, core/) never import it."""
    for layer in ("backends", "models", "nn", "core"):
        for path in modules_under(layer):
            assert not any(n.startswith("panoptic_perception.deploy") for n in imported_modules(path)), path


def test_runtime_never_imports_training():
    runtime = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("training", "cli")]
    for path in runtime:
        assert not any(n.startswith("panoptic_perception.training") for n in imported_modules(path)), path
    code = (
        "import sys, panoptic_perception, panoptic_perception.backends, panoptic_perception.demo;"
        "import panoptic_perception.cli;"
        "bad = [m for m in sys.modules if m.startswith('panoptic_perception.training')];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_package_never_imports_the_test_only_references():
    """torchvision and timm are installed for tests only (their compiled ops do not load here)."""
    for path in PACKAGE.rglob("*.py"):
        assert not {n.split(".")[0] for n in imported_modules(path)} & {"torchvision", "timm"}, path


def test_synthetic_scenes_build_on_core_only():
    """data/synthetic (the scene generator and the fusion benchmark beside it) imports core/, errors and itself only,
    so that any layer, backends/ included, may import it; core/ holds no benchmark scene."""
    for path in modules_under("data", "synthetic"):
        for name in imported_modules(path):
            if name.startswith("panoptic_perception."):
                assert name.startswith(("panoptic_perception.core.", "panoptic_perception.data.synthetic.",
                                         "panoptic_perception.errors")), f"{path}: {name}"
    for path in modules_under("core"):
        functions = [node.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)]
        assert not [name for name in functions if "benchmark" in name], path


def test_bundled_weights_are_small_and_packaged():
    weights = PACKAGE / "weights" / "twinlitenet_synthetic.pth"
    assert weights.is_file() and weights.stat().st_size < 3 * 1024 * 1024
    assert '"weights/*.pth"' in (REPO / "setup.py").read_text()


def test_package_xml_declares_what_the_node_imports():
    manifest = ET.parse(REPO / "package.xml").getroot()
    declared = {element.text for element in manifest if element.tag.endswith("depend")}
    needed = {"rclpy", "std_msgs", "sensor_msgs", "vision_msgs", "diagnostic_msgs", "lifecycle_msgs", "rcl_interfaces",
              "rosidl_default_generators", "rosidl_default_runtime", "ament_cmake", "ament_cmake_python",
              "python3-numpy", "python3-opencv", "python3-torch", "python3-yaml", "python3-tqdm",
              "python3-onnxruntime-pip"}
    assert needed <= declared, needed - declared
    ros_modules = set()
    for path in (PACKAGE / "ros").glob("*.py"):
        ros_modules |= {n.split(".")[0] for n in imported_modules(path) if n.split(".")[0].endswith("_msgs") or n.split(".")[0] in ("rclpy", "rcl_interfaces")}
    assert ros_modules <= declared, ros_modules - declared


def test_readme_documents_every_node_parameter_and_topic():
    from panoptic_perception.ros.parameters import OUTPUT_TOPICS, PARAMETERS

    readme = (REPO / "README.md").read_text()
    for spec in PARAMETERS:
        assert f"| `{spec.name}` |" in readme, spec.name
    for topic in OUTPUT_TOPICS:
        assert f"| `~/{topic}` |" in readme, topic


def test_errors_import_nothing_and_the_command_line_is_imported_by_nothing_but_its_torchrun_entry():
    assert not any(n.startswith("panoptic_perception") for n in imported_modules(PACKAGE / "errors.py"))
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "cli" or path == PACKAGE / "training" / "__main__.py":
            continue
        assert not any(n.startswith("panoptic_perception.cli") for n in imported_modules(path)), path


def test_evaluation_imports_neither_the_applications_nor_training():
    """The evaluation loop serves the command line, replay, the demo and training validation: it imports none of them."""
    applications = ("panoptic_perception.cli", "panoptic_perception.ros", "panoptic_perception.demo",
                    "panoptic_perception.training")
    for path in modules_under("evaluation"):
        assert not any(n.startswith(applications) for n in imported_modules(path)), path
