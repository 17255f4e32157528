"""Declared dependencies against the code's imports, through one table: import -> rosdep key -> PyPI name.

The third-party imports of every module (read from the code: AST, module and function level, and
``importlib.import_module("name")``) of ``pixel_perfect_ros/``, ``launch/``, ``scripts/`` and ``test/`` must be:

1. in ``DEPENDENCIES`` below;
2. in ``package.xml`` under their rosdep key (``depend``/``exec_depend``; ``test_depend`` will do for imports
   of tests only), or, having no key, named in a package.xml comment (the README says to pip-install them);
3. in ``setup.py``: ``install_requires`` ("core") or the ``extras_require`` extra of the table;
4. in ``requirements.txt`` (the development venv, which installs everything).

Each console script of setup.py runs with the core and the extras of ``TOOLS`` alone: every import it can
reach (its modules' imports, followed through the package) is core, one of its extras, or a ROS package when
it is a ROS tool; an optional feature (``Dependency.optional``) may be reached only inside a function.
The reverse holds too: nothing is declared that the table does not know. A failure names the file that
imports the package and what to add where.
"""
from __future__ import annotations

import re
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from import_scan import PACKAGE, REPO, Import, imports, module_name, relative


@dataclass(frozen=True)
class Dependency:
    rosdep: str | None
    """rosdep key in package.xml; None: the rosdep database has none (``note`` says what instead)."""
    pypi: str | None
    """PyPI distribution that setup.py requires; None: not a pip requirement of the package (ROS packages)."""
    extra: str | None
    """"core" (install_requires) or the extras_require key that has ``pypi``; None with ``pypi`` None."""
    dev: str | None
    """The requirements.txt line (distribution name) that brings it into the development venv."""
    note: str = ""
    optional: bool = False
    """An optional feature, imported inside the function that uses it (a missing one says what to install)."""
    imported: bool = True
    """False: needed at run time without an import of its own (e.g. by another library)."""


ROS_FROM_INSTALL = "ROS 2 package: from the ROS install (rosdep), not pip; development venv: the PyPI wheel"
DEPENDENCIES: dict[str, Dependency] = {
    # The ROS-free core: ppd-infer, ppd-infer-video, ppd-train.
    "numpy": Dependency("python3-numpy", "numpy", "core", "numpy"),
    "cv2": Dependency("python3-opencv", "opencv-python-headless", "core", "opencv-python-headless"),
    "torch": Dependency("python3-torch", "torch", "core", "torch",
                        "python3-torch: Debian only, a CPU build; GPU users install their own torch (pytorch.org) "
                        "before colcon build and skip the key (rosdep install --skip-keys python3-torch)"),
    "scipy": Dependency("python3-scipy", "scipy", "core", "scipy"),
    "sklearn": Dependency("python3-sklearn", "scikit-learn", "core", "scikit-learn"),
    "tqdm": Dependency("python3-tqdm", "tqdm", "core", "tqdm"),
    "safetensors": Dependency(None, "safetensors", "core", "safetensors", "no rosdep key: pip install safetensors"),
    # Extras.
    "matplotlib": Dependency("python3-matplotlib", "matplotlib", "eval", "matplotlib",
                             "the evaluation reports' plots", optional=True),
    "onnx": Dependency(None, "onnx", "export", "onnx", "no rosdep key: pip install onnx (ppd-export)"),
    "onnxscript": Dependency(None, "onnxscript", "export", "onnxscript",
                             "no rosdep key: pip install onnxscript; torch.onnx.export(dynamo=True) in "
                             "inference/onnx_export.py imports it", imported=False),
    "onnxruntime": Dependency("python3-onnxruntime-pip", "onnxruntime", "export", "onnxruntime",
                              "the onnxruntime backend and ppd-export's check (GPU: onnxruntime-gpu, key "
                              "python3-onnxruntime-gpu-pip)", optional=True),
    "ray": Dependency(None, "ray", "ray", "ray", "no rosdep key: pip install ray (ppd-bag-eval --ray)",
                      optional=True),
    "rosbags": Dependency("python3-rosbags-pip", "rosbags", "ros", "rosbags"),
    "yaml": Dependency("python3-yaml", "PyYAML", "ros", "PyYAML"),
    "tensorrt": Dependency(None, None, None, None,
                           "the tensorrt backend: NVIDIA's CUDA-only wheel (pip install tensorrt --extra-index-url "
                           "https://pypi.nvidia.com), never a requirement; missing, the backend is unavailable "
                           "and the tools fall back to torch", optional=True),
    # ROS 2 (the node, the bag tools, the launch file).
    "rclpy": Dependency("rclpy", None, None, "ros-rclpy", ROS_FROM_INSTALL),
    "rcl_interfaces": Dependency("rcl_interfaces", None, None, "ros-rclpy", ROS_FROM_INSTALL + " (with rclpy)"),
    "builtin_interfaces": Dependency("builtin_interfaces", None, None, "ros-rclpy", ROS_FROM_INSTALL + " (with rclpy)"),
    "rosgraph_msgs": Dependency("rosgraph_msgs", None, None, "ros-rclpy", ROS_FROM_INSTALL + " (with rclpy)"),
    "sensor_msgs": Dependency("sensor_msgs", None, None, "ros-sensor-msgs", ROS_FROM_INSTALL),
    "std_msgs": Dependency("std_msgs", None, None, "ros-std-msgs", ROS_FROM_INSTALL),
    "std_srvs": Dependency("std_srvs", None, None, "ros-std-srvs", ROS_FROM_INSTALL),
    "diagnostic_msgs": Dependency("diagnostic_msgs", None, None, "ros-diagnostic-msgs", ROS_FROM_INSTALL),
    "geometry_msgs": Dependency("geometry_msgs", None, None, "ros-geometry-msgs", ROS_FROM_INSTALL),
    "launch": Dependency("launch", None, None, None,
                         "ROS 2 package, not on PyPI (PyPI's `launch` is an unrelated 2017 project that shadows it: "
                         "never pip-install it); test/ros/test_launch.py skips without it"),
    "launch_ros": Dependency("launch_ros", None, None, None, "ROS 2 package, not on PyPI"),
    # Tests.
    "pytest": Dependency("python3-pytest", None, None, "pytest", "tests only"),
}
PACKAGE_XML_ONLY = {
    "rosidl_default_runtime": "the generated DepthStatus interface (msg/) at run time",
    "ros2launch": "`ros2 launch pixel_perfect_ros depth.launch.py`",
    "rviz2": "the launch file's optional RViz (rviz:=true); optional at run time",
}
"""Run-time rosdep keys that no Python import names."""
ROS_TOOL = "ROS 2"
TOOLS: dict[str, tuple[str, ...]] = {
    "ppd-infer": (),
    "ppd-infer-video": (),
    "ppd-train": (),
    "ppd-export": ("export",),
    "ppd-bench": (ROS_TOOL,),
    "depth_node": (ROS_TOOL,),
    "ppd-bag-replay": (ROS_TOOL, "ros"),
    "ppd-demo": (ROS_TOOL, "ros", "eval"),
    "ppd-bag-eval": (ROS_TOOL, "ros", "eval"),  # and "ray" for --ray
}
"""What each console script needs besides the core: setup.py extras, and ROS_TOOL for a ROS 2 install.
(Its optional features may need more: the onnxruntime and tensorrt backends, ppd-bag-eval --ray.)"""
DEPEND_TAGS = ("depend", "build_depend", "build_export_depend", "exec_depend", "test_depend", "doc_depend")
RUN_TAGS = ("depend", "exec_depend")


# --- reading the code ------------------------------------------------------------------------------

def source_files() -> list[Path]:
    """The package, launch files, Python scripts and tests (not the parity fixtures' data)."""
    scripts = [p for p in sorted((REPO / "scripts").glob("*")) if p.is_file() and p.suffix in ("", ".py")
               and "python" in p.read_text(errors="replace").partition("\n")[0]] if (REPO / "scripts").is_dir() else []
    tests = [p for p in sorted((REPO / "test").rglob("*.py")) if "fixtures" not in relative(p).parts]
    return sorted((REPO / PACKAGE).rglob("*.py")) + sorted((REPO / "launch").glob("*.py")) + scripts + tests


def local_modules() -> set[str]:
    """Names that are this repository's own: the package, and the tests' helper modules and conftests."""
    return {PACKAGE} | {p.stem for p in (REPO / "test").rglob("*.py")}


def is_third_party(top: str, local: set[str]) -> bool:
    return top not in sys.stdlib_module_names and top not in local


def third_party_imports(files: list[Path]) -> dict[str, list[Import]]:
    """Top-level name -> where it is imported."""
    local = local_modules()
    found: dict[str, list[Import]] = {}
    for path in files:
        seen = set()
        for imp in imports(path):
            if is_third_party(imp.top, local) and (imp.top, imp.line) not in seen:
                seen.add((imp.top, imp.line))
                found.setdefault(imp.top, []).append(imp)
    return found


# --- reading the declarations ----------------------------------------------------------------------

def package_xml_keys(text: str) -> dict[str, set[str]]:
    """rosdep key -> the tags that declare it; and '<!--' -> the text of all comments."""
    keys: dict[str, set[str]] = {}
    for tag, key in re.findall(r"<(%s)(?:\s[^>]*)?>\s*([^<\s]+)\s*</\1>" % "|".join(DEPEND_TAGS),
                               re.sub(r"<!--.*?-->", "", text, flags=re.S)):
        keys.setdefault(key, set()).add(tag)
    keys["<!--"] = {" ".join(re.findall(r"<!--(.*?)-->", text, flags=re.S))}
    return keys


def setup_arguments(path: Path = REPO / "setup.py") -> dict:
    """The keyword arguments setup.py passes to setuptools.setup (run with setup() replaced)."""
    captured: dict = {}
    with mock.patch("setuptools.setup", lambda **kwargs: captured.update(kwargs)):
        runpy.run_path(str(path), run_name="setup")
    assert captured, "setup.py did not call setuptools.setup"
    return captured


def requirement_name(requirement: str) -> str:
    """PEP 503 normalised distribution name of a requirement line ("ros-rclpy[fastrtps]>=1" -> ros-rclpy)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def setup_groups(arguments: dict) -> dict[str, set[str]]:
    """'core' and each extra -> normalised distribution names."""
    groups = {"core": {requirement_name(r) for r in arguments.get("install_requires", [])}}
    for extra, requirements in arguments.get("extras_require", {}).items():
        groups[extra] = {requirement_name(r) for r in requirements}
    return groups


def requirements_txt_names(text: str) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {requirement_name(line) for line in lines if line and not line.startswith("-")}


# --- the checks (each returns its problems, one sentence each) ---------------------------------------

def _places(found: list[Import]) -> str:
    places = sorted({imp.where for imp in found}, key=lambda where: (where.startswith("test/"), where))
    return ", ".join(places[:3]) + (f" and {len(places) - 3} more" if len(places) > 3 else "")


def table_problems(found: dict[str, list[Import]]) -> list[str]:
    problems = [f"{top} (imported by {_places(where)}) is not in DEPENDENCIES of test/unit/test_dependencies.py: "
                "add its rosdep key (rosdep/python.yaml, or None and why), its PyPI name and its setup.py extra"
                for top, where in sorted(found.items()) if top not in DEPENDENCIES]
    for top, dep in DEPENDENCIES.items():
        if dep.imported and top not in found:
            problems.append(f"DEPENDENCIES has {top}, which nothing imports: remove it (and its declarations), "
                            "or mark it imported=False with the reason")
        if (dep.rosdep is None or dep.pypi is None) and not dep.note:
            problems.append(f"DEPENDENCIES[{top!r}]: a missing rosdep key or PyPI name needs a note saying why")
        if (dep.pypi is None) != (dep.extra is None):
            problems.append(f"DEPENDENCIES[{top!r}]: a PyPI name goes with its setup.py extra ('core' or an extra)")
    return problems


def package_xml_problems(text: str, found: dict[str, list[Import]]) -> list[str]:
    keys = package_xml_keys(text)
    comments = keys.pop("<!--").pop()
    problems = []
    for top, dep in DEPENDENCIES.items():
        where = found.get(top, [])
        run_time = not dep.imported or any(not imp.in_tests for imp in where)
        if not where and dep.imported:
            continue
        if dep.rosdep is None:
            if dep.pypi and not re.search(rf"\b{re.escape(dep.pypi)}\b", comments):
                problems.append(f"package.xml: {dep.pypi} has no rosdep key; name it in the comment that lists the "
                                f"pip-only packages ({top} is imported by {_places(where) or 'none: ' + dep.note})")
            continue
        tags = keys.get(dep.rosdep, set())
        wanted = RUN_TAGS if run_time else (*RUN_TAGS, "test_depend")
        if not tags & set(wanted):
            tag = "exec_depend" if run_time else "test_depend"
            problems.append(f"package.xml lacks <{tag}>{dep.rosdep}</{tag}> ({top}, imported by {_places(where)})")
    for key, why in PACKAGE_XML_ONLY.items():
        if not keys.get(key, set()) & set(RUN_TAGS):
            problems.append(f"package.xml lacks <exec_depend>{key}</exec_depend> ({why})")
    known = {dep.rosdep for dep in DEPENDENCIES.values()} | set(PACKAGE_XML_ONLY)
    for key, tags in sorted(keys.items()):
        if key not in known and tags & set(RUN_TAGS + ("test_depend",)):
            problems.append(f"package.xml declares {key}, which the table does not know: add the import that needs "
                            "it to DEPENDENCIES (or the key to PACKAGE_XML_ONLY), or remove it")
    return problems


def setup_problems(arguments: dict, found: dict[str, list[Import]]) -> list[str]:
    groups = setup_groups(arguments)
    problems = []
    for top, dep in DEPENDENCIES.items():
        if dep.pypi is None or (dep.imported and top not in found):
            continue
        what = f"{top}, imported by {_places(found[top])}" if dep.imported else dep.note
        if dep.extra not in groups:
            problems.append(f"setup.py has no extra {dep.extra!r}: add extras_require[{dep.extra!r}] with "
                            f"{dep.pypi!r} ({what})")
        elif requirement_name(dep.pypi) not in groups[dep.extra]:
            place = "install_requires" if dep.extra == "core" else f"extras_require[{dep.extra!r}]"
            problems.append(f"setup.py: add {dep.pypi!r} to {place} ({what})")
    expected = {}
    for dep in DEPENDENCIES.values():
        if dep.pypi:
            expected.setdefault(requirement_name(dep.pypi), set()).add(dep.extra)
    for group, names in groups.items():
        for name in sorted(names):
            if group != "all" and group not in expected.get(name, set()):
                problems.append(f"setup.py declares {name} in {group!r}, which the table does not: move it to "
                                f"{sorted(expected[name])} or add its import to DEPENDENCIES" if name in expected
                                else f"setup.py declares {name} ({group!r}), which no import of the table needs")
    extras = set(groups) - {"core", "all"}
    union = set().union(*(groups[extra] for extra in extras)) if extras else set()
    if groups.get("all", union) != union:
        problems.append(f"setup.py: extras_require['all'] must be every extra's requirements: "
                        f"missing {sorted(union - groups['all'])}, extra {sorted(groups['all'] - union)}")
    return problems


def requirements_problems(text: str, found: dict[str, list[Import]]) -> list[str]:
    names = requirements_txt_names(text)
    problems = []
    for top, dep in DEPENDENCIES.items():
        for wanted in {dep.pypi, dep.dev} - {None}:
            if requirement_name(wanted) not in names and (not dep.imported or top in found):
                problems.append(f"requirements.txt lacks {wanted} ({top}, imported by "
                                f"{_places(found.get(top, [])) or dep.note})")
    return problems


def module_files() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / PACKAGE).rglob("*.py"))}


def reachable_imports(entry: str, files: dict[str, Path]) -> list[Import]:
    """Third-party imports that running ``entry`` (a module) can reach: its imports and, through the package's
    own imports (module or function level, with the parent packages), theirs. Not those under TYPE_CHECKING."""
    local = local_modules()
    todo, seen, found, places = [entry], set(), [], set()
    while todo:
        module = todo.pop()
        if module in seen or module not in files:
            continue
        seen.add(module)
        todo.extend(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))
        for imp in imports(files[module]):
            if imp.type_checking:
                continue
            if imp.top == PACKAGE:
                parts = imp.name.split(".")
                while parts and ".".join(parts) not in files:
                    parts.pop()
                todo.append(".".join(parts))
            elif is_third_party(imp.top, local) and (imp.top, imp.where) not in places:
                places.add((imp.top, imp.where))
                found.append(imp)
    return found


def tool_problems(arguments: dict, tools: dict[str, tuple[str, ...]] = TOOLS) -> list[str]:
    groups = setup_groups(arguments)
    files = module_files()
    scripts = dict(re.match(r"\s*(\S+)\s*=\s*([\w.]+):", line).groups()
                   for line in arguments.get("entry_points", {}).get("console_scripts", []))
    problems = [f"TOOLS of test/unit/test_dependencies.py lacks the console script {name}: add the extras it needs"
                for name in sorted(set(scripts) - set(tools))]
    for name, module in sorted(scripts.items()):
        needs = tools.get(name, ())
        problems += [f"TOOLS[{name!r}] names the extra {extra!r}, which setup.py lacks"
                     for extra in needs if extra != ROS_TOOL and extra not in groups]
        allowed = set().union(groups["core"], *(groups.get(extra, set()) for extra in needs))
        for imp in reachable_imports(module, files):
            dep = DEPENDENCIES.get(imp.top)
            if dep is None or (dep.optional and imp.in_function):
                continue  # unknown: table_problems says so; optional features load where used
            if dep.pypi is None:
                if ROS_TOOL not in needs and dep.rosdep is not None:
                    problems.append(f"{name} ({module}) reaches {imp.top} ({imp.where}), a ROS package: it is a "
                                    f"ROS tool (add {ROS_TOOL!r} to TOOLS[{name!r}]) or must not import it")
                elif dep.rosdep is None:
                    problems.append(f"{name} reaches {imp.top} ({imp.where}) outside a function: {dep.note}")
            elif requirement_name(dep.pypi) not in allowed:
                extras = ",".join(extra for extra in needs if extra != ROS_TOOL)
                command = f"pip install .[{extras}]" if extras else "pip install ."
                problems.append(f"`{command}` lacks {dep.pypi} for {name}: {imp.top} is imported by {imp.where}"
                                f"{'' if imp.in_function else ' (module level)'}; declare it in setup.py core or "
                                f"an extra of TOOLS[{name!r}], or import it inside the function that uses it "
                                "(optional features only)")
    return problems


# --- tests -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def found() -> dict[str, list[Import]]:
    return third_party_imports(source_files())


@pytest.fixture(scope="module")
def setup_kwargs() -> dict:
    return setup_arguments()


def test_the_scan_sees_every_kind_of_import(found, tmp_path):
    module = tmp_path / "module.py"
    module.write_text("from __future__ import annotations\nimport os, numpy.linalg\nfrom typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    import matplotlib\nfrom rosbags.rosbag2 import Reader\n"
                      "def f():\n    import ray\n    return importlib.import_module('tensorrt')\n"
                      "import pixel_perfect_ros.geometry\nfrom checkpoint_files import x\n")
    scanned = {top: imps[0] for top, imps in third_party_imports([module]).items()}
    assert set(scanned) == {"numpy", "matplotlib", "rosbags", "ray", "tensorrt"}
    assert scanned["ray"].in_function and scanned["tensorrt"].in_function and not scanned["numpy"].in_function
    assert scanned["matplotlib"].type_checking and scanned["rosbags"].where.endswith("module.py:6")
    # and in the repository: the package, launch files, tests
    assert {"torch", "safetensors", "rclpy", "launch_ros", "pytest"} <= set(found)


def test_every_third_party_import_is_in_the_table(found):
    assert table_problems(found) == []


def test_package_xml_declares_every_dependency_with_its_rosdep_key(found):
    assert package_xml_problems((REPO / "package.xml").read_text(), found) == []


def test_setup_py_declares_every_dependency_in_core_or_its_extra(found, setup_kwargs):
    assert setup_problems(setup_kwargs, found) == []


def test_requirements_txt_installs_every_dependency(found):
    assert requirements_problems((REPO / "requirements.txt").read_text(), found) == []


def test_each_tool_runs_with_the_core_and_its_extras(setup_kwargs):
    assert tool_problems(setup_kwargs) == []


def test_the_core_is_ros_free_and_ranges_not_pins(setup_kwargs):
    core = setup_kwargs["install_requires"]
    assert not [r for r in core if "==" in r], "setup.py keeps ranges; pins belong in requirements.txt / constraints"
    assert setup_kwargs["python_requires"] == ">=3.10"
    ros_names = {requirement_name(d.dev) for d in DEPENDENCIES.values() if d.dev and d.dev.startswith("ros-")}
    assert not ros_names & {requirement_name(r) for reqs in [core, *setup_kwargs["extras_require"].values()]
                            for r in reqs}, "ROS packages come from the ROS install, not from setup.py"


def test_a_dropped_dependency_is_reported(found, setup_kwargs):
    """The checks can fail: the real files with one declaration taken out."""
    xml = (REPO / "package.xml").read_text()
    without_yaml = xml.replace("<exec_depend>python3-yaml</exec_depend>", "")
    assert without_yaml != xml
    problems = package_xml_problems(without_yaml, found)
    assert len(problems) == 1 and "<exec_depend>python3-yaml</exec_depend>" in problems[0], problems
    assert "pixel_perfect_ros/ros/parameter_files.py" in problems[0]
    without_comment = xml.replace("safetensors", "safe tensors")
    assert any("safetensors has no rosdep key" in p for p in package_xml_problems(without_comment, found))
    stale = xml.replace("<test_depend>", "<exec_depend>python3-transforms3d</exec_depend><test_depend>")
    assert any("python3-transforms3d" in p for p in package_xml_problems(stale, found))

    dropped = {**setup_kwargs, "install_requires": [r for r in setup_kwargs["install_requires"]
                                                    if not r.startswith("safetensors")]}
    problems = setup_problems(dropped, found)
    assert any("add 'safetensors' to install_requires" in p and "inference/checkpoints.py" in p for p in problems)
    assert any("lacks safetensors for ppd-infer" in p for p in tool_problems(dropped)), tool_problems(dropped)
    extras = {k: [r for r in v if not r.startswith("ray")] for k, v in setup_kwargs["extras_require"].items()}
    problems = setup_problems({**setup_kwargs, "extras_require": extras}, found)
    assert any("add 'ray' to extras_require['ray']" in p and "bag_eval_runners.py" in p for p in problems), problems

    moved = {**setup_kwargs, "install_requires": [*setup_kwargs["install_requires"], "matplotlib>=3.8"]}
    assert any("matplotlib in 'core'" in p for p in setup_problems(moved, found))
    assert any("lacks rosbags" in p for p in requirements_problems(
        (REPO / "requirements.txt").read_text().replace("rosbags", "#"), found))

    unknown = {**found, "transforms3d": [Import("transforms3d", "transforms3d", REPO / PACKAGE / "x.py", 3, False)]}
    assert any(p.startswith("transforms3d (imported by pixel_perfect_ros/x.py:3) is not in DEPENDENCIES")
               for p in table_problems(unknown))
