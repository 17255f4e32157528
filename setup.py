"""pip install of pixel_perfect_ros: the ROS-free core (model, inference, geometry, tools), and extras.

    pip install .                 # ppd-infer, ppd-infer-video, ppd-train (torch CPU or CUDA: install yours first)
    pip install ".[export]"       # + ppd-export and the onnxruntime backend (onnx, onnxscript, onnxruntime)
    pip install ".[eval]"         # + the evaluation reports' plots (matplotlib)
    pip install ".[ray]"          # + ppd-bag-eval --ray
    pip install ".[ros]"          # + the Python libraries of the ROS-side tools (bags, parameter files)
    pip install ".[all]"          # all of the above

ROS 2 itself (rclpy, the message packages, the generated pixel_perfect_ros.msg) is not a pip requirement:
ROS 2 users build the whole package (interfaces, node, launch, config) with colcon (CMakeLists.txt) and
get the dependencies of package.xml with rosdep. The import -> rosdep key -> PyPI name table that keeps
this file, package.xml and requirements.txt in step is test/unit/test_dependencies.py.
"""
from setuptools import find_packages, setup

PACKAGE = "pixel_perfect_ros"

CORE = [
    "numpy>=1.26",
    # Any build: the CPU wheel, or a CUDA one from pytorch.org installed before this package (pip keeps it).
    "torch>=2.4",
    "opencv-python-headless>=4.9",
    "scipy>=1.15",
    "scikit-learn>=1.5",
    "tqdm>=4.66",
    "safetensors>=0.4",  # checkpoints (Pi3's model.safetensors); no rosdep key
]
EXTRAS = {
    "eval": ["matplotlib>=3.8"],
    "export": ["onnx>=1.16", "onnxscript>=0.5", "onnxruntime>=1.18"],  # GPU: onnxruntime-gpu in its place
    "ray": ["ray>=2.40"],
    "ros": ["rosbags>=0.10", "PyYAML>=6"],
}
EXTRAS["all"] = sorted({requirement for requirements in EXTRAS.values() for requirement in requirements})

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["data/bundled/*"]},  # the bundled synthetic-world model
    install_requires=CORE,
    extras_require=EXTRAS,
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
