"""The layer rule, read from the code (AST) of every module under ``pixel_perfect_ros/``:

1. each package imports only packages to its left in ``ORDER`` (and itself);
2. rclpy and ROS message/service packages are imported in ``ros/`` and ``tools/`` only;
3. no import cycle between modules (imports under ``if TYPE_CHECKING:`` are not run and do not count).

A failure names the file, the line and the import.
"""
from __future__ import annotations

import ast
from pathlib import Path

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


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import run by the module (module level and in functions);
    ``from X import y`` also yields ``X.y`` (y may be a module)."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                for grandchild in child.orelse:
                    visit_statement(grandchild)
                continue
            visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


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
        for line, name in imports(path):
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
    return {module: {name for _, name in imports(path) if name in known and name != module}
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
        assert [name for _, name in imports(source)] == [
            "pixel_perfect_ros.ros", "pixel_perfect_ros.ros.conversions", "rclpy"]
        problems = layer_violations()
    finally:
        PACKAGE_ROOT = saved
    assert any("geometry imports pixel_perfect_ros.ros" in p for p in problems), problems
    assert any("rclpy (ROS) outside" in p for p in problems), problems
