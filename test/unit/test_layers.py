"""The layer rule, read from the code (AST) of every module under ``pixel_perfect_ros/``:

1. each package imports only packages to its left in ``ORDER`` (and itself);
2. rclpy and ROS message/service packages are imported in ``ros/`` and ``tools/`` only;
3. no import cycle between modules (imports under ``if TYPE_CHECKING:`` are not run and do not count).

A failure names the file, the line and the import.
"""
from __future__ import annotations

from pathlib import Path

from import_scan import imports, module_name

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "pixel_perfect_ros"
ORDER = (("model", "geometry"), ("inference",), ("evaluation",), ("synthetic",), ("training",), ("ros",), ("tools",))
"""The packages in import order: each imports only those of its own or an earlier group."""
RANK = {package: rank for rank, group in enumerate(ORDER) for package in group}
TOP_LEVEL = {"__init__", "msg"}
"""Modules of the top package that any layer may import (the package itself; the generated interfaces,
which are ROS messages and so obey rule 2)."""
ROS_PACKAGES = {"rclpy", "rosgraph_msgs", "builtin_interfaces", "rcl_interfaces", "ament_index_python"}
"""Top-level ROS Python packages besides the ``*_msgs``/``*_srvs`` interface packages."""
ROS_LAYERS = {"ros", "tools"}


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import the module runs (not those under TYPE_CHECKING);
    ``from X import y`` also yields ``X.y`` (y may be a module)."""
    return [(imp.line, imp.name) for imp in imports(path, PACKAGE_ROOT.parent) if not imp.type_checking]


def modules() -> dict[str, Path]:
    return {module_name(path, PACKAGE_ROOT.parent): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def layer(module: str) -> str:
    """The package of a ``pixel_perfect_ros.<package>...`` module ('__init__' for the top package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_ros(name: str) -> bool:
    top = name.split(".")[0]
    return top in ROS_PACKAGES or top.endswith(("_msgs", "_srvs", "_interfaces")) or name.startswith(
        "pixel_perfect_ros.msg")


def layer_violations() -> list[str]:
    """One line per offending import statement and rule."""
    problems: dict[tuple[Path, int, str], str] = {}
    for module, path in modules().items():
        own = layer(module)
        where = path.relative_to(PACKAGE_ROOT.parent)
        for line, name in runtime_imports(path):
            if is_ros(name) and own not in ROS_LAYERS:
                problems.setdefault((where, line, "ros"), f"{where}:{line}: imports {name} (ROS) outside ros/ and tools/")
            if not name.startswith("pixel_perfect_ros.") or own not in RANK:
                continue
            target = layer(name)
            if target in TOP_LEVEL:
                continue
            if target not in RANK:
                problems.setdefault((where, line, target),
                                    f"{where}:{line}: imports {name}, a package missing from the layer order")
            elif RANK[target] > RANK[own]:
                problems.setdefault((where, line, target),
                                    f"{where}:{line}: {own} imports {name} ({target} is to its right in the layer order)")
    return list(problems.values())


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (names that are not modules, e.g. classes, dropped)."""
    known = modules()
    return {module: {name for _, name in runtime_imports(path) if name in known and name != module}
            for module, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_every_package_is_in_the_layer_order():
    packages = {path.parent.name for path in PACKAGE_ROOT.glob("*/__init__.py")}
    assert packages - set(RANK) <= {"msg"}, f"packages missing from ORDER: {sorted(packages - set(RANK))}"


def test_imports_follow_the_layer_order_and_ros_stays_in_ros_and_tools():
    problems = layer_violations()
    assert not problems, "imports against the layer rule:\n" + "\n".join(problems)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(component) for component in found)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The scanner itself: an upward import, a ROS import below ros/ and a cycle are reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert is_ros("sensor_msgs.msg") and is_ros("rclpy.node") and is_ros("std_srvs.srv")
    assert not is_ros("numpy") and not is_ros("pixel_perfect_ros.ros.conversions")
    source = tmp_path / "pixel_perfect_ros" / "geometry" / "bad.py"
    source.parent.mkdir(parents=True)
    source.write_text("from ..ros import conversions\nimport rclpy\nif TYPE_CHECKING:\n    import torch\n")
    global PACKAGE_ROOT
    saved, PACKAGE_ROOT = PACKAGE_ROOT, tmp_path / "pixel_perfect_ros"
    try:
        assert [name for _, name in runtime_imports(source)] == [
            "pixel_perfect_ros.ros", "pixel_perfect_ros.ros.conversions", "rclpy"]
        problems = layer_violations()
    finally:
        PACKAGE_ROOT = saved
    assert any("geometry imports pixel_perfect_ros.ros" in p for p in problems), problems
    assert any("rclpy (ROS) outside" in p for p in problems), problems
