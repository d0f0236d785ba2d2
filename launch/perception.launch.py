"""Starts the panoptic_perception node (and optionally RViz) on a camera topic.

    ros2 launch panoptic_perception perception.launch.py image_topic:=/camera/image_raw
    ros2 launch panoptic_perception perception.launch.py input_transport:=compressed rviz:=true
    ros2 launch panoptic_perception perception.launch.py namespace:=front weights:=/data/best.pth
    ros2 launch panoptic_perception perception.launch.py runtime:=onnxruntime
    ros2 launch panoptic_perception perception.launch.py cameras:=front,left,right

`ros2 launch panoptic_perception perception.launch.py --show-args` lists the arguments.
Outputs: under /<namespace>/panoptic_perception/, those of the backend (README, Topics;
panoptic_perception/ros/topics.py), and /diagnostics.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def camera_names(text: str) -> list[str]:
    """The `cameras` argument as names: `front,left,right` (or YAML-style `[front, left, right]`)."""
    return [name.strip() for name in text.strip().strip("[]").split(",") if name.strip()]


def launch_nodes(context):
    """The node (and rviz2), built when the arguments are known: the node gets a `cameras` parameter only
    when the argument names cameras, since an empty argument must leave the params file's cameras as they are."""
    share = FindPackageShare("panoptic_perception")
    backend = LaunchConfiguration("backend")
    weights = LaunchConfiguration("weights")
    runtime = LaunchConfiguration("runtime")
    image_topic = LaunchConfiguration("image_topic")
    input_transport = LaunchConfiguration("input_transport")
    namespace = LaunchConfiguration("namespace")
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    rviz = LaunchConfiguration("rviz")
    cameras = LaunchConfiguration("cameras")

    overrides = {
        "backend": ParameterValue(backend, value_type=str),
        "weights": ParameterValue(weights, value_type=str),
        "runtime": ParameterValue(runtime, value_type=str),
        "input_transport": ParameterValue(input_transport, value_type=str),
        "use_sim_time": ParameterValue(use_sim_time, value_type=bool),
    }
    names = camera_names(cameras.perform(context))
    if names:
        overrides["cameras"] = names
    perception = Node(
        package="panoptic_perception",
        executable="perception_node",
        name="panoptic_perception",
        namespace=namespace,
        # The params file first, then the arguments: later entries win. Typed explicitly so that a
        # weights path such as "1e3" or "true" stays a string and use_sim_time becomes a bool.
        parameters=[params_file, overrides],
        # The single-camera node subscribes to the relative names `image` / `image/compressed`; only
        # the one that matches input_transport is used. Named cameras have their own topics.
        remappings=[
            ("image", image_topic),
            ("image/compressed", [image_topic, "/compressed"]),
        ],
        output="screen",
        emulate_tty=True,
    )

    # perception.rviz names the topics of the single-camera node without a namespace; remap them into
    # the namespace (identity when it is empty) and, with named cameras, the images to the first camera's.
    shown = f"/panoptic_perception/{names[0]}" if names else "/panoptic_perception"
    visualization = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "perception.rviz"])],
        parameters=[{"use_sim_time": ParameterValue(use_sim_time, value_type=bool)}],
        remappings=[
            *[(f"/panoptic_perception/{topic}", [namespace, f"{shown}/{topic}"])
              for topic in ("overlay", "drivable_area", "lane_lines")],
            # The ground outputs are the node's, fused over its cameras.
            *[(f"/panoptic_perception/ground/{topic}", [namespace, f"/panoptic_perception/ground/{topic}"])
              for topic in ("drivable", "lane_lines", "markers")],
        ],
        condition=IfCondition(rviz),
        output="screen",
    )
    return [perception, visualization]


def generate_launch_description():
    share = FindPackageShare("panoptic_perception")
    backend = LaunchConfiguration("backend")

    arguments = [
        DeclareLaunchArgument(
            "backend", default_value="twinlitenet",
            description="Inference backend (`panoptic-perception backends` lists them); also picks the "
                        "default params_file config/<backend>.yaml"),
        DeclareLaunchArgument(
            "weights", default_value="",
            description="Checkpoint (.pth) for the backend; empty: the backend's bundled weights"),
        DeclareLaunchArgument(
            "runtime", default_value="torch", choices=["torch", "onnxruntime", "tensorrt"],
            description="What runs the network: torch (eager), onnxruntime or tensorrt (its ONNX export, cached; "
                        "README, Deployment). precision and onnx_path come from the params file"),
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/image_raw",
            description="Camera image topic (sensor_msgs/Image); with input_transport:=compressed the node "
                        "subscribes to <image_topic>/compressed (image_transport's naming)"),
        DeclareLaunchArgument(
            "input_transport", default_value="raw", choices=["raw", "compressed"],
            description="raw: subscribe to sensor_msgs/Image; compressed: to sensor_msgs/CompressedImage"),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="Namespace of the node and its topics (e.g. front for a second camera); empty: none"),
        DeclareLaunchArgument(
            "params_file",
            # Built from the backend argument, so `backend:=X` alone also switches the tuned parameters.
            default_value=PathJoinSubstitution([share, "config", [backend, ".yaml"]]),
            description="Node parameters (ROS 2 params file); default: the package's config/<backend>.yaml. "
                        "backend, weights, runtime, input_transport and use_sim_time from the arguments override it"),
        DeclareLaunchArgument(
            "cameras", default_value="",
            description="Camera names served by one node, comma-separated (front,left,right): each camera's "
                        "topics default to <camera>/image_raw and <camera>/camera_info, outputs come under "
                        "~/<camera>/; empty: the params file's cameras (none: one camera on image_topic)"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false",
            description="Use /clock (true when playing a bag with --clock)"),
        DeclareLaunchArgument(
            "rviz", default_value="false",
            description="Also start rviz2 with config/perception.rviz (overlay, drivable area, lane lines)"),
    ]

    # Large images between processes need a bigger Fast DDS shared-memory segment, or best-effort
    # (sensor-data QoS) subscribers lose most 720p frames; see config/fastdds_large_data.xml.
    # The variables apply to every process started below (the node and rviz2). A value the user
    # already exported is kept: to use your own profile, `export FASTRTPS_DEFAULT_PROFILES_FILE=/path/
    # to/profile.xml` (and/or FASTDDS_DEFAULT_PROFILES_FILE) before `ros2 launch`. Fast DDS 2.x
    # (Humble, Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE only; Fast DDS 3.x (Kilted and later) reads
    # FASTDDS_DEFAULT_PROFILES_FILE, so both are set; one the user set also fills in the other.
    # The camera driver runs in another launch: give it the same variable, since a transport only
    # helps when both ends use it.
    fastdds_profile = PathJoinSubstitution([share, "config", "fastdds_large_data.xml"])
    environment = [
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE",
            EnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE",
                default_value=EnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", default_value=fastdds_profile),
            ),
        ),
        SetEnvironmentVariable(
            "FASTRTPS_DEFAULT_PROFILES_FILE",
            # By now FASTDDS_DEFAULT_PROFILES_FILE is set: the user's value or the package's profile.
            EnvironmentVariable(
                "FASTRTPS_DEFAULT_PROFILES_FILE",
                default_value=EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", default_value=fastdds_profile),
            ),
        ),
    ]

    return LaunchDescription([*arguments, *environment, OpaqueFunction(function=launch_nodes)])
