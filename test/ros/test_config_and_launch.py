"""config/ and launch/ against the parameters the node really declares (launch itself is not
installable here: the launch file is compiled and its parameter names checked)."""
import ast
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import rclpy
import yaml

from pixel_perfect_ros.ros.depth_node import DepthNode
from pixel_perfect_ros.ros.parameters import PARAMETERS, SPECS
from pixel_perfect_ros.tools import parameter_docs

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "depth.launch.py"


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


def test_launch_file_compiles_and_sets_only_declared_parameters():
    source = LAUNCH_FILE.read_text()
    tree = ast.parse(compile(source, str(LAUNCH_FILE), "exec", flags=ast.PyCF_ONLY_AST))
    model_parameters = next(
        ast.literal_eval(node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODEL_PARAMETERS" for t in node.targets)
    )
    literal_keys = {key.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
                    for key in node.keys if isinstance(key, ast.Constant)}
    assert set(model_parameters) <= set(SPECS)
    assert literal_keys <= set(SPECS) | {"use_sim_time"}  # use_sim_time: declared by every rclpy node
    launch_arguments = {node.args[0].value for node in ast.walk(tree)
                        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument"}
    assert set(model_parameters) <= launch_arguments
    assert {"image", "camera_info", "namespace", "params_file", "use_sim_time", "rviz"} <= launch_arguments


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
