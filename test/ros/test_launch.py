"""launch/perception.launch.py and the files it uses, checked statically (no `launch` / `launch_ros`).

The launch file is read with `ast`: its arguments, the node it starts, the parameters it overrides and
every file it takes from the package share are compared with the repository (CMakeLists.txt, scripts/,
config/) and with the node's parameter table (panoptic_perception/ros/parameters.py). The params file
of each backend, the RViz config and the Fast DDS profile are parsed and checked against the node's
contract.
"""

from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from panoptic_perception.backends import list_backends
from panoptic_perception.ros.parameters import PARAMETERS, PARAMETERS_BY_NAME
from panoptic_perception.ros.topics import OUTPUT_TOPICS

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "panoptic_perception"
LAUNCH_FILE = REPO / "launch" / "perception.launch.py"
RVIZ_FILE = REPO / "config" / "perception.rviz"
FASTDDS_PROFILE = REPO / "config" / "fastdds_large_data.xml"
FASTDDS_NAMESPACE = "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"
# Fast DDS 2.x (Humble, Jazzy) reads the first, 3.x (Kilted on) the second.
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")

ARGUMENT_DEFAULTS = {
    "backend": "twinlitenet",
    "weights": "",
    "runtime": "torch",
    "image_topic": "/camera/image_raw",
    "input_transport": "raw",
    "namespace": "",
    "params_file": None,  # a substitution: share/config/<backend>.yaml, checked below
    "use_sim_time": "false",
    "rviz": "false",
    "cameras": "",
}
OVERRIDDEN_PARAMETERS = {"backend", "weights", "runtime", "input_transport", "use_sim_time"}
IMAGE_OUTPUTS = ("overlay", "drivable_area", "lane_lines", "semantic")  # sensor_msgs/Image topics
MASK_OUTPUTS = ("drivable_area", "lane_lines", "semantic")  # mono8 with small values: black unless normalised
SHARE = "<share of panoptic_perception>"


# -- a small static reader of launch files --------------------------------------------------------------
def call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return None


def keyword(call: ast.Call, name: str, position: int | None = None) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    if position is not None and len(call.args) > position:
        return call.args[position]
    return None


class LaunchFile:
    """The AST of a launch file, with just enough evaluation to resolve names, paths and topics."""

    def __init__(self, path: Path) -> None:
        self.source = path.read_text()
        self.tree = ast.parse(self.source, filename=str(path))
        self.assignments: dict[str, ast.AST] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.assignments[node.targets[0].id] = node.value

    def reached(self, node: ast.AST) -> list[ast.AST]:
        """The nodes under ``node``, and under the module-level functions it names (an OpaqueFunction's)."""
        found, functions = list(ast.walk(node)), {f.name: f for f in self.tree.body if isinstance(f, ast.FunctionDef)}
        for name in {n.id for n in found if isinstance(n, ast.Name)} & set(functions):
            found.extend(ast.walk(functions[name]))
        return found

    def calls(self, name: str) -> list[ast.Call]:
        return [node for node in ast.walk(self.tree) if call_name(node) == name]

    def resolve(self, node: ast.AST | None) -> ast.AST | None:
        """Follows variable names to the expression assigned to them."""
        seen = set()
        while isinstance(node, ast.Name) and node.id in self.assignments and node.id not in seen:
            seen.add(node.id)
            node = self.assignments[node.id]
        return node

    def evaluate(self, node: ast.AST | None, arguments: dict[str, str]) -> str | None:
        """The string a substitution expression yields for the given launch arguments; None: unknown."""
        node = self.resolve(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):  # a list of substitutions: concatenated
            parts = [self.evaluate(element, arguments) for element in node.elts]
            return None if None in parts else "".join(parts)
        name = call_name(node)
        if name == "LaunchConfiguration":
            return arguments.get(self.evaluate(keyword(node, "variable_name", 0), arguments))
        if name == "FindPackageShare":
            return SHARE if self.evaluate(keyword(node, "package", 0), arguments) == PACKAGE else None
        if name == "PathJoinSubstitution":
            parts = keyword(node, "substitutions", 0)
            parts = self.resolve(parts)
            if not isinstance(parts, (ast.List, ast.Tuple)):
                return None
            values = [self.evaluate(part, arguments) for part in parts.elts]
            return None if None in values else "/".join(values)
        if name == "ParameterValue":
            return self.evaluate(keyword(node, "value", 0), arguments)
        return None

    def references(self, node: ast.AST | None) -> set[str]:
        """Names of the launch arguments an expression reads, directly or through variables."""
        found, pending, visited = set(), [node], set()
        while pending:
            current = self.resolve(pending.pop())
            if current is None or id(current) in visited:
                continue
            visited.add(id(current))
            for sub in ast.walk(current):
                if call_name(sub) == "LaunchConfiguration":
                    found.add(self.evaluate(keyword(sub, "variable_name", 0), {}))
                elif isinstance(sub, ast.Name) and sub.id in self.assignments:
                    pending.append(sub)
        return found


def defaults(launch: LaunchFile, backend: str | None = None) -> dict[str, str]:
    """The launch arguments at their defaults (params_file evaluated from the backend argument)."""
    values = {name: value for name, value in ARGUMENT_DEFAULTS.items() if value is not None}
    if backend is not None:
        values["backend"] = backend
    values["params_file"] = launch.evaluate(keyword(declared_arguments(launch)["params_file"], "default_value"), values)
    return values


def declared_arguments(launch: LaunchFile) -> dict[str, ast.Call]:
    return {launch.evaluate(keyword(call, "name", 0), {}): call for call in launch.calls("DeclareLaunchArgument")}


def nodes(launch: LaunchFile, package: str) -> list[ast.Call]:
    return [call for call in launch.calls("Node") if launch.evaluate(keyword(call, "package"), {}) == package]


def perception_node(launch: LaunchFile) -> ast.Call:
    found = nodes(launch, PACKAGE)
    assert len(found) == 1, f"expected one Node of package {PACKAGE}, found {len(found)}"
    return found[0]


def share_path(path: str) -> Path:
    assert path.startswith(SHARE + "/"), path
    return REPO / path[len(SHARE) + 1 :]


@pytest.fixture(scope="module")
def launch() -> LaunchFile:
    return LaunchFile(LAUNCH_FILE)


# -- the launch file ------------------------------------------------------------------------------------
def test_launch_file_parses_and_defines_generate_launch_description(launch):
    compile(launch.source, str(LAUNCH_FILE), "exec")
    functions = {node.name: node for node in launch.tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    returns = [node for node in ast.walk(functions["generate_launch_description"]) if isinstance(node, ast.Return)]
    assert returns and all(call_name(node.value) == "LaunchDescription" for node in returns)
    imported = {node.module.split(".")[0] for node in ast.walk(launch.tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name.split(".")[0] for node in ast.walk(launch.tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    # What `ros2 launch` provides, nothing the package's runtime would have to install.
    assert imported <= {"launch", "launch_ros", "os", "__future__"}, imported


def test_launch_arguments_are_exactly_the_documented_ones_with_descriptions_and_defaults(launch):
    calls = launch.calls("DeclareLaunchArgument")
    names = [launch.evaluate(keyword(call, "name", 0), {}) for call in calls]
    assert sorted(names) == sorted(ARGUMENT_DEFAULTS), names
    for name, call in zip(names, calls):
        description = launch.evaluate(keyword(call, "description"), {})
        assert description and len(description) > 10, f"{name}: no description"
        expected = ARGUMENT_DEFAULTS[name]
        if expected is not None:
            assert launch.evaluate(keyword(call, "default_value"), {}) == expected, name
    assert ARGUMENT_DEFAULTS["backend"] in list_backends()
    for name in ("input_transport", "runtime"):
        choices = keyword(declared_arguments(launch)[name], "choices")
        if choices is not None:  # optional, but if given it must agree with the node
            assert [launch.evaluate(c, {}) for c in launch.resolve(choices).elts] == list(PARAMETERS_BY_NAME[name].choices)


@pytest.mark.parametrize("backend", list_backends())
def test_default_params_file_is_the_backends_config(launch, backend):
    params_file = defaults(launch, backend)["params_file"]
    assert params_file == f"{SHARE}/config/{backend}.yaml"
    assert share_path(params_file).is_file()


def test_every_file_taken_from_the_package_share_exists_in_the_repository(launch):
    referenced = set()
    for backend in list_backends():
        arguments = defaults(launch, backend)
        for call in launch.calls("PathJoinSubstitution"):
            path = launch.evaluate(call, arguments)
            assert path is not None, f"cannot resolve line {call.lineno} statically"
            if path.startswith(SHARE):
                referenced.add(path)
    for path in referenced:
        assert share_path(path).is_file(), f"{path} is not in the repository"
    # CMakeLists.txt installs launch/ and config/ to share/<package>: what is referenced must be there.
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"install\(DIRECTORY[^)]*\bconfig\b[^)]*DESTINATION share/\$\{PROJECT_NAME\}\)", cmake)
    assert {f"{SHARE}/config/perception.rviz", f"{SHARE}/config/fastdds_large_data.xml"} <= referenced


def test_it_starts_the_installed_perception_node_executable_named_panoptic_perception(launch):
    node = perception_node(launch)
    assert launch.evaluate(keyword(node, "executable"), {}) == "perception_node"
    assert launch.evaluate(keyword(node, "name"), {}) == "panoptic_perception"
    assert launch.references(keyword(node, "namespace")) == {"namespace"}
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"install\(PROGRAMS\s+scripts/perception_node\s+DESTINATION\s+lib/\$\{PROJECT_NAME\}\)", cmake)
    script = REPO / "scripts" / "perception_node"
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!") and "panoptic_perception.ros.node" in text


def test_parameters_are_the_params_file_then_overrides_of_existing_parameters(launch):
    parameters = launch.resolve(keyword(perception_node(launch), "parameters"))
    assert isinstance(parameters, ast.List)
    first, *rest = parameters.elts
    assert launch.references(first) == {"params_file"}, "the params file must come first (later entries win)"
    overrides = {}
    for element in rest:
        element = launch.resolve(element)
        assert isinstance(element, ast.Dict), ast.dump(element)
        for key, value in zip(element.keys, element.values):
            overrides[launch.evaluate(key, {})] = value
    assert set(overrides) == OVERRIDDEN_PARAMETERS
    for name, value in overrides.items():
        assert name in PARAMETERS_BY_NAME or name == "use_sim_time", name
        assert launch.references(value) == {name}, f"{name} must come from the launch argument {name}"


def test_the_cameras_argument_names_the_cameras_only_when_given(launch):
    (function,) = [f for f in launch.tree.body if isinstance(f, ast.FunctionDef) and f.name == "camera_names"]
    namespace = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(LAUNCH_FILE), "exec"), namespace)
    camera_names = namespace["camera_names"]
    assert camera_names("front,left,right") == ["front", "left", "right"]
    assert camera_names("[front, left, right]") == ["front", "left", "right"]
    assert camera_names(" front ") == ["front"]
    assert camera_names("") == [] and camera_names("[]") == []
    # The override is set under a condition on the names: an empty argument keeps the params file's cameras.
    (assignment,) = [node for node in ast.walk(launch.tree) if isinstance(node, ast.If)
                     for node in node.body if isinstance(node, ast.Assign)
                     and isinstance(node.targets[0], ast.Subscript)
                     and launch.evaluate(node.targets[0].slice, {}) == "cameras"]
    assert call_name(launch.resolve(assignment.value)) == "camera_names"
    assert launch.references(assignment.value) == {"cameras"}
    parameters = launch.resolve(keyword(perception_node(launch), "parameters"))
    assert launch.resolve(parameters.elts[-1]) is launch.resolve(assignment.targets[0].value)


def test_image_topics_are_remapped_from_the_image_topic_argument(launch):
    remappings = launch.resolve(keyword(perception_node(launch), "remappings"))
    arguments = defaults(launch) | {"image_topic": "/front/image_raw"}
    pairs = {launch.evaluate(pair.elts[0], arguments): launch.evaluate(pair.elts[1], arguments)
             for pair in remappings.elts}
    assert pairs == {"image": "/front/image_raw", "image/compressed": "/front/image_raw/compressed"}


def test_fastdds_profile_variables_point_at_the_package_profile_unless_already_set(launch):
    calls = {launch.evaluate(keyword(call, "name", 0), {}): call for call in launch.calls("SetEnvironmentVariable")}
    assert set(PROFILE_VARIABLES) <= set(calls), set(calls)
    for variable in PROFILE_VARIABLES:
        value = launch.resolve(keyword(calls[variable], "value", 1))
        # A value the user exported wins: the outermost expression reads the variable itself ...
        assert call_name(value) == "EnvironmentVariable", f"{variable}: overrides the user's value"
        assert launch.evaluate(keyword(value, "name", 0), {}) == variable
        # ... and falls back to the package's profile.
        inner = [launch.resolve(node) for node in ast.walk(value)]
        paths = {launch.evaluate(node, {}) for node in inner if call_name(node) == "PathJoinSubstitution"}
        assert f"{SHARE}/config/fastdds_large_data.xml" in paths, variable
    # The environment is set before the processes start: actions run in LaunchDescription order.
    (description,) = launch.calls("LaunchDescription")
    order = []
    for element in launch.resolve(description.args[0]).elts:
        element = element.value if isinstance(element, ast.Starred) else element
        reached = launch.reached(launch.resolve(element))
        kinds = {call_name(launch.resolve(n)) for n in reached}
        packages = {launch.evaluate(keyword(launch.resolve(n), "package"), {}) for n in reached
                    if call_name(launch.resolve(n)) == "Node"}
        order.append("environment" if "SetEnvironmentVariable" in kinds else "node" if packages else "other")
    assert "node" in order and "environment" in order
    assert order.index("environment") < order.index("node"), order


def test_rviz_is_optional_and_uses_the_package_config(launch):
    (rviz,) = nodes(launch, "rviz2")
    condition = launch.resolve(keyword(rviz, "condition"))
    assert call_name(condition) == "IfCondition" and launch.references(condition) == {"rviz"}
    arguments = launch.resolve(keyword(rviz, "arguments"))
    values = [launch.evaluate(a, defaults(launch)) for a in arguments.elts]
    assert values[values.index("-d") + 1] == f"{SHARE}/config/perception.rviz"


# -- params files ---------------------------------------------------------------------------------------
def check_parameter_value(name: str, value) -> None:
    spec = PARAMETERS_BY_NAME[name]
    default = spec.default
    # ROS 2 types parameters strictly: `500` in a params file is an INTEGER, and declaring the parameter
    # with a float default then raises InvalidParameterTypeException. So floats must be written as floats.
    if default == []:  # the camera names: an empty list is written [] (the node then reads it as unset)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{name}: {value!r}"
        return
    if isinstance(default, list):
        assert isinstance(value, list) and value, f"{name}: expected a non-empty list, got {value!r}"
        element_type = type(default[0]) if default else None
        assert element_type is None or all(type(v) is element_type for v in value), f"{name}: {value!r}"
        if default:
            assert len(value) == len(default), f"{name}: {value!r}"
        return
    assert type(value) is type(default), f"{name}: {value!r} is {type(value).__name__}, expected {type(default).__name__}"
    if spec.minimum is not None:
        assert spec.minimum <= value, f"{name}: {value} < {spec.minimum}"
    if spec.maximum is not None:
        assert value <= spec.maximum, f"{name}: {value} > {spec.maximum}"
    if spec.choices:
        assert value in spec.choices, f"{name}: {value!r} not in {spec.choices}"


@pytest.mark.parametrize("backend", list_backends())
def test_backend_params_file_is_valid_for_the_node(backend):
    path = REPO / "config" / f"{backend}.yaml"
    assert path.is_file(), f"every backend needs {path.relative_to(REPO)}"
    document = yaml.safe_load(path.read_text())
    assert list(document) == ["/**"], "use the /** wildcard so the file works under any namespace and name"
    assert list(document["/**"]) == ["ros__parameters"]
    parameters = document["/**"]["ros__parameters"]
    unknown = sorted(set(parameters) - set(PARAMETERS_BY_NAME))
    assert not unknown, f"not parameters of the node: {unknown}"
    for name, value in parameters.items():
        check_parameter_value(name, value)
    assert parameters["backend"] == backend
    missing = [spec.name for spec in PARAMETERS if spec.name not in parameters]
    assert not missing, f"list every parameter (the file documents the node's settings): {missing}"


def test_parameter_checks_reject_what_the_node_would_reject():
    for name, bad in (("max_frame_age_ms", 500), ("qos_depth", 0), ("input_transport", "h264"),
                      ("fast", 1), ("input_size", [0.0, 0.0]), ("threads", 1.0)):
        with pytest.raises(AssertionError):
            check_parameter_value(name, bad)
    for spec in PARAMETERS:
        check_parameter_value(spec.name, spec.default)


# -- RViz -----------------------------------------------------------------------------------------------
def displays(tree: list[dict]):
    for display in tree or []:
        yield display
        yield from displays(display.get("Displays"))  # rviz_common/Group


def test_rviz_config_shows_the_node_images():
    config = yaml.safe_load(RVIZ_FILE.read_text())
    assert {"Panels", "Visualization Manager", "Window Geometry"} <= set(config)
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"]
    images = [d for d in displays(manager["Displays"]) if d["Class"] == "rviz_default_plugins/Image"]
    published = {f"/{PACKAGE}/{topic}": topic for topic in IMAGE_OUTPUTS}
    assert set(IMAGE_OUTPUTS) <= set(OUTPUT_TOPICS)
    topics = {}
    for display in images:
        topic = display["Topic"]
        assert topic["Value"] in published, f"{display['Name']}: {topic['Value']} is not an image the node publishes"
        assert topic["Reliability Policy"] in ("Reliable", "Best Effort", "System Default")
        assert topic["Durability Policy"] in ("Volatile", "Transient Local", "System Default")
        assert topic["History Policy"] in ("Keep Last", "Keep All", "System Default")
        assert isinstance(topic["Depth"], int) and topic["Depth"] >= 1
        topics[published[topic["Value"]]] = display
    assert {"overlay", "drivable_area", "lane_lines"} <= set(topics)
    for topic, display in topics.items():
        if topic in MASK_OUTPUTS:
            assert display["Normalize Range"] is True, f"{topic}: 0/1 masks look black without Normalize Range"


def test_rviz_config_shows_the_ground_outputs_in_the_target_frame():
    from panoptic_perception.ros.parameters import PARAMETERS_BY_NAME
    from panoptic_perception.ros.topics import GROUND_TOPICS

    manager = yaml.safe_load(RVIZ_FILE.read_text())["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == PARAMETERS_BY_NAME["target_frame"].default
    shown = {d["Class"]: d["Topic"]["Value"] for d in displays(manager["Displays"])}
    displayed = {"rviz_default_plugins/Map": "ground/drivable", "rviz_default_plugins/PointCloud2": "ground/lane_lines",
                 "rviz_default_plugins/MarkerArray": "ground/markers"}
    for plugin, topic in displayed.items():
        assert shown.get(plugin) == f"/{PACKAGE}/{topic}" and topic in GROUND_TOPICS, plugin


# -- Fast DDS profile -----------------------------------------------------------------------------------
def test_fastdds_profile_has_a_large_shared_memory_segment_in_the_default_participant():
    root = ET.parse(FASTDDS_PROFILE).getroot()
    ns = {"p": FASTDDS_NAMESPACE}
    if root.tag == "dds":
        root = root.find("p:profiles", ns)
    assert root.tag == f"{{{FASTDDS_NAMESPACE}}}profiles", root.tag
    descriptors = {d.findtext("p:transport_id", namespaces=ns): d
                   for d in root.findall(".//p:transport_descriptors/p:transport_descriptor", ns)}
    defaults_ = [p for p in root.findall("p:participant", ns) if p.get("is_default_profile") == "true"]
    assert len(defaults_) == 1, "exactly one default participant profile"
    rtps = defaults_[0].find("p:rtps", ns)
    used = [t.text for t in rtps.findall("p:userTransports/p:transport_id", ns)]
    assert used and set(used) <= set(descriptors), used
    types = {descriptors[t].findtext("p:type", namespaces=ns): descriptors[t] for t in used}
    assert {"SHM", "UDPv4"} <= set(types), "shared memory on the host, UDPv4 to other hosts"
    assert int(types["SHM"].findtext("p:segment_size", namespaces=ns)) >= 8 * 1024 * 1024
    assert rtps.findtext("p:useBuiltinTransports", namespaces=ns).strip() == "false"


def test_the_multi_camera_example_configures_each_of_its_cameras():
    from panoptic_perception.ros.parameters import CAMERA_PARAMETERS, check_values

    parameters = yaml.safe_load((REPO / "config" / "multi_camera.yaml").read_text())["/**"]["ros__parameters"]
    cameras = parameters["cameras"]
    assert cameras == ["front", "left", "right"]
    node_parameters = {name: value for name, value in parameters.items() if not name.startswith("cameras.")}
    for name, value in node_parameters.items():
        check_parameter_value(name, value)
    check_values(node_parameters)
    assert [spec.name for spec in PARAMETERS if spec.name not in node_parameters] == []
    camera_parameters = {name for name in parameters if name.startswith("cameras.")}
    assert camera_parameters == {f"cameras.{c}.{spec.name}" for c in cameras for spec in CAMERA_PARAMETERS}
    for spec in CAMERA_PARAMETERS:
        for camera in cameras:
            value = parameters[f"cameras.{camera}.{spec.name}"]
            assert isinstance(value, type(spec.default)) and (not spec.choices or value in spec.choices), (camera, spec.name, value)
