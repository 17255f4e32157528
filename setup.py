"""pip / colcon (ament_python) build of pixel_perfect_ros.

The ROS-free core (model, inference, geometry, tools) installs with plain pip; the data files below
put the package into an ament index so that ROS tooling finds its launch and config files.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pixel_perfect_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    install_requires=["numpy>=1.26", "torch>=2.4", "opencv-python-headless>=4.9", "tqdm>=4.66"],
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="pixel_perfect_ros developers",
    maintainer_email="pixel-perfect-ros@users.noreply.github.com",
    description="Flying-pixel-free depth images and point clouds from one camera with Pixel-Perfect Depth.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "ppd-infer = pixel_perfect_ros.tools.infer:main",
        ],
    },
)
