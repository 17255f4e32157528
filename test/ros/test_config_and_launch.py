"""config/ and launch/ against the parameters the node really declares. ROS 2 launch is not installable
here: the launch file is loaded with ``launch`` and ``launch_ros`` replaced by recorders of what it
creates, and its plain functions are called directly."""
import importlib.util
import random
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import rclpy
import yaml

from pixel_perfect_ros.ros.depth_node import DepthNode
from pixel_perfect_ros.ros.parameters import PARAMETERS, SPECS
from pixel_perfect_ros.tools import parameter_docs

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "depth.launch.py"
LAUNCH_CLASSES = {"launch": ("LaunchDescription",), "launch.actions": ("DeclareLaunchArgument", "OpaqueFunction"),
                  "launch_ros.actions": ("Node",)}
"""The launch and launch_ros classes the launch file uses, by module."""
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


class Recorded:
    """Stands in for a launch class: keeps its arguments; ``created`` lists every instance in order."""

    created: list["Recorded"] = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        Recorded.created.append(self)


def of_type(name: str) -> list[Recorded]:
    """The recorded instances of the launch class ``name``, in creation order."""
    return [item for item in Recorded.created if type(item).__name__ == name]


@pytest.fixture()
def launch_file(monkeypatch):
    """The launch file as a module, with ``launch`` and ``launch_ros`` replaced by recorders, ROS_DISTRO
    kilted and no Fast DDS profile exported."""
    monkeypatch.setattr(Recorded, "created", [])
    monkeypatch.setenv("ROS_DISTRO", "kilted")
    for variable in PROFILE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for module_name in ("launch_ros", "launch_ros.substitutions"):
        monkeypatch.setitem(sys.modules, module_name, types.ModuleType(module_name))
    for module_name, class_names in LAUNCH_CLASSES.items():
        module = types.ModuleType(module_name)
        for name in class_names:
            setattr(module, name, type(name, (Recorded,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    spec = importlib.util.spec_from_file_location("depth_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def declared(launch_file) -> dict[str, Recorded]:
    """generate_launch_description's DeclareLaunchArgument records by argument name (earlier records cleared)."""
    Recorded.created.clear()
    launch_file.generate_launch_description()
    return {item.args[0]: item for item in of_type("DeclareLaunchArgument")}


def find_package_share(installed: tuple[str, ...]) -> type:
    """A launch_ros FindPackageShare that finds the packages ``installed`` only (else a KeyError, as
    ament_index_python's PackageNotFoundError)."""
    class FindPackageShare:
        def __init__(self, package: str):
            self.package = package

        def perform(self, context) -> str:
            if self.package not in installed:
                raise KeyError(self.package)
            return f"/opt/ros/share/{self.package}"
    return FindPackageShare


def launch(launch_file, installed=("rviz2",), **arguments: str) -> list[Recorded]:
    """The Node records of a launch with ``arguments`` (the rest at their declared defaults) where the
    ament index holds the packages ``installed``."""
    values = {name: item.kwargs["default_value"] for name, item in declared(launch_file).items()}
    sys.modules["launch_ros.substitutions"].FindPackageShare = find_package_share(installed)
    (start,) = of_type("OpaqueFunction")
    start.kwargs["function"](types.SimpleNamespace(launch_configurations={**values, **arguments}))
    return of_type("Node")


def yaml_parameters() -> dict:
    return yaml.safe_load((REPO / "config" / "depth.yaml").read_text())["/**"]["ros__parameters"]


def test_yaml_and_the_docs_table_are_the_rendering_of_the_parameter_table():
    assert (REPO / "config" / "depth.yaml").read_text() == parameter_docs.yaml_text()
    assert parameter_docs.markdown_table() in (REPO / "docs" / "node.md").read_text()


def test_yaml_holds_every_parameter_with_its_default():
    values = yaml_parameters()
    assert list(values) == [spec.name for spec in PARAMETERS]
    for spec in PARAMETERS:
        assert values[spec.name] == spec.default and type(values[spec.name]) is type(spec.default), spec.name


def test_node_started_with_the_yaml_declares_all_of_it(tiny_checkpoints):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=random.randint(1, 200),
               args=["--ros-args", "--params-file", str(REPO / "config" / "depth.yaml"),
                     "-p", f"checkpoint:={tiny_checkpoints['ppd']}", "-p", f"semantics:={tiny_checkpoints['da2']}",
                     "-p", "target_area:=3072"])
    try:
        node = DepthNode(context=context)
        from_file = set(yaml_parameters())
        assert from_file <= {name for name, _ in node._parameters.items()}
        assert set(node._parameter_overrides) - set(node._parameters) == set()  # nothing undeclared
        assert node.get_parameter("far_m").value == yaml_parameters()["far_m"]
        assert node.get_parameter("target_area").value == 3072  # the command line wins over the file
        node.destroy_node()
    finally:
        context.try_shutdown()


def test_launch_file_sets_only_declared_parameters(launch_file):
    assert set(launch_file.MODEL_PARAMETERS) <= set(SPECS)
    parameters = launch_file.node_parameters("depth.yaml", dict.fromkeys(launch_file.MODEL_PARAMETERS, "x"), "true")
    assert parameters[0] == "depth.yaml"
    names = {name for entry in parameters[1:] for name in entry}
    assert names == set(launch_file.MODEL_PARAMETERS) | {"use_sim_time"}  # use_sim_time: every rclpy node's
    assert set(launch_file.MODEL_PARAMETERS) | {"image", "camera_info", "namespace", "params_file", "use_sim_time",
                                                "rviz", "fastdds_profile"} <= set(declared(launch_file))


def test_fastdds_profile_variable_is_the_one_the_distros_fast_dds_reads(launch_file):
    for distro in ("humble", "jazzy"):  # Fast DDS 2.x
        assert launch_file.profile_environment("/p.xml", distro) == {"FASTRTPS_DEFAULT_PROFILES_FILE": "/p.xml"}
    for distro in ("kilted", "rolling", ""):  # Fast DDS 3; "": PyPI wheels without ROS_DISTRO (Kilted)
        assert launch_file.profile_environment("/p.xml", distro) == {"FASTDDS_DEFAULT_PROFILES_FILE": "/p.xml"}
    assert launch_file.profile_environment("", "kilted") == {}


def test_node_and_rviz_get_the_shared_memory_profile_by_default(launch_file):
    shipped = str(REPO / "config" / "fastdds_shm.xml")
    assert declared(launch_file)["fastdds_profile"].kwargs["default_value"] == shipped
    for node in launch(launch_file, rviz="true"):
        assert node.kwargs["additional_env"] == {"FASTDDS_DEFAULT_PROFILES_FILE": shipped}
    for node in launch(launch_file, rviz="true", fastdds_profile="/mine.xml"):
        assert node.kwargs["additional_env"] == {"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}
    for node in launch(launch_file, rviz="true", fastdds_profile=""):
        assert node.kwargs["additional_env"] == {}


def test_an_exported_fastdds_profile_is_the_default(launch_file, monkeypatch):
    monkeypatch.setenv("ROS_DISTRO", "jazzy")
    monkeypatch.setenv("FASTRTPS_DEFAULT_PROFILES_FILE", "/exported.xml")
    assert declared(launch_file)["fastdds_profile"].kwargs["default_value"] == "/exported.xml"


def test_use_sim_time_comes_from_the_params_file_unless_given(launch_file):
    assert declared(launch_file)["use_sim_time"].kwargs["default_value"] == ""
    assert launch_file.node_parameters("depth.yaml", {}, "") == ["depth.yaml"]
    assert launch_file.node_parameters("depth.yaml", {"checkpoint": ""}, "true") == ["depth.yaml",
                                                                                     {"use_sim_time": True}]
    rviz, node = launch(launch_file, rviz="true", use_sim_time="false", checkpoint="/ppd.pth")
    assert node.kwargs["parameters"][1:] == [{"checkpoint": "/ppd.pth"}, {"use_sim_time": False}]
    assert rviz.kwargs["parameters"] == [node.kwargs["parameters"][0], {"use_sim_time": False}]
    rviz, node = launch(launch_file, rviz="true")
    assert all("use_sim_time" not in entry for entry in node.kwargs["parameters"] + rviz.kwargs["parameters"])


def test_rviz_starts_before_the_node_in_its_namespace_and_sees_its_outputs(launch_file):
    rviz, node = launch(launch_file, rviz="true", namespace="cam1")
    assert (rviz.kwargs["package"], node.kwargs["executable"]) == ("rviz2", "depth_node")
    assert rviz.kwargs["namespace"] == node.kwargs["namespace"] == "cam1"
    config = Path(rviz.kwargs["arguments"][1])
    assert rviz.kwargs["arguments"][0] == "-d" and config == REPO / "config" / "depth.rviz"
    # rviz2's displays subscribe through its node (rclcpp resolves relative names in its namespace).
    topics = [display["Topic"]["Value"] for display in yaml.safe_load(config.read_text())["Visualization Manager"]
              ["Displays"] if "Topic" in display]
    assert topics == ["depth/image", "depth/points"]  # relative, as the node publishes them
    assert [item.kwargs["executable"] for item in launch(launch_file, rviz="false")] == ["depth_node"]


def test_missing_rviz2_ends_the_launch_before_any_node(launch_file):
    with pytest.raises(RuntimeError, match="rviz2 package is not installed.*rviz:=false"):
        launch(launch_file, installed=(), rviz="true")
    assert of_type("Node") == []
    assert len(launch(launch_file, installed=(), rviz="false")) == 1


def test_bad_rviz_and_use_sim_time_values_end_the_launch_before_any_node(launch_file):
    arguments = declared(launch_file)
    assert arguments["rviz"].kwargs["choices"] == ["true", "false"]
    assert arguments["use_sim_time"].kwargs["choices"] == ["", "true", "false"]
    (description,) = of_type("LaunchDescription")
    entities = [type(item).__name__ for item in description.args[0]]
    assert entities == ["DeclareLaunchArgument"] * len(arguments) + ["OpaqueFunction"]  # declarations check first


def test_rviz_config_matches_node_outputs():
    rviz = yaml.safe_load((REPO / "config" / "depth.rviz").read_text())
    displays = {d["Class"]: d for d in rviz["Visualization Manager"]["Displays"]}
    image, cloud = displays["rviz_default_plugins/Image"], displays["rviz_default_plugins/PointCloud2"]
    assert image["Topic"]["Value"] == "depth/image" and cloud["Topic"]["Value"] == "depth/points"
    reliability = {"reliable": "Reliable", "best_effort": "Best Effort"}[SPECS["output_reliability"].default]
    assert image["Topic"]["Reliability Policy"] == cloud["Topic"]["Reliability Policy"] == reliability


def test_fastdds_profile_is_shared_memory_only():
    root = ET.parse(REPO / "config" / "fastdds_shm.xml").getroot()
    ns = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    assert root.find(".//f:transport_descriptor/f:type", ns).text == "SHM"
    assert root.find(".//f:useBuiltinTransports", ns).text == "false"


def test_depth_node_is_a_node():
    assert issubclass(DepthNode, rclpy.node.Node)
