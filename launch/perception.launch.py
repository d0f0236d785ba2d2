"""Starts the panoptic_perception node (and optionally RViz) on a camera topic.

    ros2 launch panoptic_perception perception.launch.py image_topic:=/camera/image_raw
    ros2 launch panoptic_perception perception.launch.py input_transport:=compressed rviz:=true
    ros2 launch panoptic_perception perception.launch.py namespace:=front weights:=/data/best.pth
    ros2 launch panoptic_perception perception.launch.py runtime:=onnxruntime

`ros2 launch panoptic_perception perception.launch.py --show-args` lists the arguments.
Outputs: under /<namespace>/panoptic_perception/, those of the backend (README, Topics;
panoptic_perception/ros/topics.py), and /diagnostics.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
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

    perception = Node(
        package="panoptic_perception",
        executable="perception_node",
        name="panoptic_perception",
        namespace=namespace,
        # The params file first, then the arguments: later entries win. Typed explicitly so that a
        # weights path such as "1e3" or "true" stays a string and use_sim_time becomes a bool.
        parameters=[
            params_file,
            {
                "backend": ParameterValue(backend, value_type=str),
                "weights": ParameterValue(weights, value_type=str),
                "runtime": ParameterValue(runtime, value_type=str),
                "input_transport": ParameterValue(input_transport, value_type=str),
                "use_sim_time": ParameterValue(use_sim_time, value_type=bool),
            },
        ],
        # The node subscribes to the relative names `image` / `image/compressed`; only the one that
        # matches input_transport is used.
        remappings=[
            ("image", image_topic),
            ("image/compressed", [image_topic, "/compressed"]),
        ],
        output="screen",
        emulate_tty=True,
    )

    # perception.rviz names the topics of the node without a namespace; remap them into the namespace
    # (identity when it is empty).
    visualization = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "perception.rviz"])],
        parameters=[{"use_sim_time": ParameterValue(use_sim_time, value_type=bool)}],
        remappings=[
            (f"/panoptic_perception/{topic}", [namespace, f"/panoptic_perception/{topic}"])
            for topic in ("overlay", "drivable_area", "lane_lines")
        ],
        condition=IfCondition(rviz),
        output="screen",
    )

    return LaunchDescription([*arguments, *environment, perception, visualization])
