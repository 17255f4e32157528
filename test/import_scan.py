"""One reader of the imports in this repository's Python files (AST), for the tests that check them:
test_layers (the layer rule) and test_dependencies (declared dependencies)."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "pixel_perfect_ros"


@dataclass(frozen=True)
class Import:
    top: str
    """Top-level name, e.g. ``cv2`` for ``import cv2.aruco``."""
    name: str
    path: Path
    line: int
    in_function: bool
    type_checking: bool = False

    @property
    def where(self) -> str:
        return f"{relative(self.path)}:{self.line}"

    @property
    def in_tests(self) -> bool:
        return relative(self.path).parts[0] == "test"


def relative(path: Path, root: Path = REPO) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def module_name(path: Path, root: Path = REPO) -> str | None:
    """``pixel_perfect_ros.a.b`` of a package file under ``root``, else None."""
    parts = relative(path, root).with_suffix("").parts
    if parts[0] != PACKAGE:
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = REPO) -> list[Import]:
    """Every absolute import of the file: import / from-import statements at any depth, and
    ``importlib.import_module("literal")``. Relative imports come back resolved (``pixel_perfect_ros...``)."""
    module = module_name(path, root) or ""
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def add(name: str, node: ast.AST, in_function: bool, type_checking: bool) -> None:
        found.append(Import(name.split(".")[0], name, path, node.lineno, in_function, type_checking))

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, in_function, type_checking)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            add(target, node, in_function, type_checking)
            for alias in node.names:  # from a.b import c: c may be a module
                add(f"{target}.{alias.name}", node, in_function, type_checking)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and not node.args[0].value.startswith(".")
              and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")):
            add(node.args[0].value, node, in_function, type_checking)
        in_function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        type_checking = type_checking or (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function, type_checking)

    visit(ast.parse(path.read_text(), str(path)), False, False)
    return found
