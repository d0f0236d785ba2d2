"""The ROS 2 adapter: the perception node and message conversions.

The only part of the package that needs ROS 2 (rclpy and the message packages). Importing this
sub-package itself imports no ROS module; ``ros.node`` and ``ros.conversions`` do.
"""
