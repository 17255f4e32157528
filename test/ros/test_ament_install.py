"""The ROS 2 build of the whole package (what colcon runs: CMakeLists.txt with rosidl, the Python
package, scripts, launch and config), from a copy of the sources, into a fresh prefix."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("CMakeLists.txt", "package.xml", "msg", "launch", "config", "scripts", "pixel_perfect_ros")


def test_cmake_install_gives_a_working_ros_package(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(
            REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                           if (REPO / name).is_dir() else {}))
    venv = Path(sys.prefix)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "AMENT_PREFIX_PATH": str(venv)}
    prefix = tmp_path / "install"
    for command in (["cmake", "-S", str(source), "-B", str(tmp_path / "build"), f"-DCMAKE_INSTALL_PREFIX={prefix}",
                     f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
                    ["cmake", "--build", str(tmp_path / "build"), "-j2"],
                    ["cmake", "--install", str(tmp_path / "build")]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    site = prefix / Path(sysconfig.get_paths()["purelib"]).relative_to(sys.prefix)
    console_scripts = dict(re.findall(r'"([\w-]+) = pixel_perfect_ros\.([\w.]+):main"', (REPO / "setup.py").read_text()))
    tools = prefix / "lib" / "pixel_perfect_ros"
    assert {p.name for p in tools.iterdir()} == set(console_scripts)  # every tool for `ros2 run`
    for name, module in console_scripts.items():
        assert f"from pixel_perfect_ros.{module} import main" in (tools / name).read_text(), name
    assert (prefix / "share" / "pixel_perfect_ros" / "launch" / "depth.launch.py").is_file()
    assert (prefix / "share" / "pixel_perfect_ros" / "config" / "depth.yaml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "pixel_perfect_ros").is_file()
    assert (site / "pixel_perfect_ros" / "__init__.py").read_text() == (REPO / "pixel_perfect_ros" / "__init__.py").read_text()

    # Import from the install alone: the source tree and the development interfaces are taken off sys.path.
    probe = f"""
import sys
sys.path = [p for p in sys.path if p != {str(REPO)!r} and "pixel_perfect_ros_interfaces" not in p]
sys.path.insert(0, {str(site)!r})
import pixel_perfect_ros, pixel_perfect_ros.ros.depth_node
from pixel_perfect_ros.msg import DepthStatus
from rclpy.serialization import serialize_message
from ament_index_python.packages import get_package_share_directory
assert pixel_perfect_ros.__path__ == [{str(site / 'pixel_perfect_ros')!r}], pixel_perfect_ros.__path__
assert len(serialize_message(DepthStatus(model_id="x"))) > 100
print(get_package_share_directory("pixel_perfect_ros"))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**env, "AMENT_PREFIX_PATH": f"{prefix}:{venv}",
                                 "LD_LIBRARY_PATH": f"{prefix / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}",
                                 "_ROS_WHEELS_BOOTSTRAP_COMPLETE": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(prefix / "share" / "pixel_perfect_ros")

    # An installed tool runs from the prefix, as `ros2 run pixel_perfect_ros ppd-infer` runs it: the bundled
    # model (installed with the package) on one image.
    image = tmp_path / "frame.png"
    assert cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    result = subprocess.run([sys.executable, str(tools / "ppd-infer"), str(image), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**env, "PYTHONPATH": str(site), "_ROS_WHEELS_BOOTSTRAP_COMPLETE": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "frame_depth.npy").is_file()
