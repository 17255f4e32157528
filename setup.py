"""pip install of pixel_perfect_ros: the ROS-free core (model, inference, geometry, tools).

ROS 2 users build the whole package (interfaces, node, launch, config) with colcon: CMakeLists.txt.
"""
from setuptools import find_packages, setup

PACKAGE = "pixel_perfect_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["data/bundled/*"]},  # the bundled synthetic-world model
    install_requires=["numpy>=1.26", "torch>=2.4", "opencv-python-headless>=4.9", "tqdm>=4.66", "scipy>=1.16",
                      "scikit-learn>=1.5"],
    python_requires=">=3.10",
    zip_safe=True,
    maintainer="pixel_perfect_ros developers",
    maintainer_email="pixel-perfect-ros@users.noreply.github.com",
    description="Flying-pixel-free depth images and point clouds from one camera with Pixel-Perfect Depth.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "ppd-infer = pixel_perfect_ros.tools.infer:main",
            "ppd-infer-video = pixel_perfect_ros.tools.infer_video:main",
            "ppd-demo = pixel_perfect_ros.tools.demo:main",
            "ppd-bag-eval = pixel_perfect_ros.tools.bag_eval:main",
            "ppd-bag-replay = pixel_perfect_ros.tools.bag_replay:main",
            "depth_node = pixel_perfect_ros.ros.depth_node:main",
            "ppd-train = pixel_perfect_ros.tools.train:main",
            "ppd-export = pixel_perfect_ros.tools.export:main",
            "ppd-bench = pixel_perfect_ros.tools.bench:main",
        ],
    },
)
