"""pixel_perfect_ros: Pixel-Perfect Depth for ROS 2.

Layers (imports point down only): model -> inference -> geometry -> ros -> tools. Nothing outside
``ros/`` imports rclpy.
"""
import pkgutil

# rosidl generates ``pixel_perfect_ros.msg`` into a ``pixel_perfect_ros`` folder of its own install
# location. A colcon install puts it beside this file; a pip development install keeps it elsewhere
# on sys.path, and this joins the two.
__path__ = pkgutil.extend_path(__path__, __name__)
