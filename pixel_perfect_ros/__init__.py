"""pixel_perfect_ros: Pixel-Perfect Depth for ROS 2.

Layers: model, geometry -> inference -> evaluation -> synthetic -> training -> ros -> tools; each
imports only those to its left (``test/unit/test_layers.py``). Only ``ros/`` and ``tools/`` import rclpy.
"""
import pkgutil

# rosidl generates ``pixel_perfect_ros.msg`` into a ``pixel_perfect_ros`` folder of its own install
# location. A colcon install puts it beside this file; a pip development install keeps it elsewhere
# on sys.path, and this joins the two.
__path__ = pkgutil.extend_path(__path__, __name__)
