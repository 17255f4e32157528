"""config/depth.yaml and the parameter table of docs/node.md, rendered from ``ros/parameters.py``'s table.

    python -m pixel_perfect_ros.tools.parameter_docs   # rewrites config/depth.yaml and the docs/node.md table

Tests compare both files with this rendering, so the documentation cannot drift from the node.
"""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from ..ros.parameters import PARAMETERS, ParameterSpec

TABLE_BEGIN = "<!-- parameters table: python -m pixel_perfect_ros.tools.parameter_docs -->"
TABLE_END = "<!-- end of parameters table -->"


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _allowed(spec: ParameterSpec) -> str:
    if spec.choices:
        return " | ".join(spec.choices)
    if spec.limits:
        return f"{spec.limits[0]:g} .. {spec.limits[1]:g}"
    return "true | false" if isinstance(spec.default, bool) else "path" if isinstance(spec.default, str) else ""


def yaml_text() -> str:
    """The parameters file: every parameter with its default and a comment."""
    lines = [
        "# depth_node parameters: every parameter with its default (rendered from",
        "# pixel_perfect_ros/ros/parameters.py). Read-only ones are fixed when the node starts; the others",
        "# can be changed at run time:  ros2 param set /depth_node depth_mode fixed_range",
        "/**:",
        "  ros__parameters:",
    ]
    for spec in PARAMETERS:
        notes = []
        if spec.choices:
            notes.append(f"one of {_allowed(spec)}")
        elif spec.limits:
            notes.append(f"range {_allowed(spec)}")
        if spec.read_only:
            notes.append("read-only")
        comment = spec.description + (f" ({'; '.join(notes)})" if notes else "")
        lines += [f"    # {line}" for line in textwrap.wrap(comment, 96)]
        lines.append(f"    {spec.name}: {_value(spec.default)}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The docs/node.md table, between its begin and end markers."""
    rows = [TABLE_BEGIN, "| parameter | default | values | run-time | meaning |", "|---|---|---|---|---|"]
    for spec in PARAMETERS:
        allowed = _allowed(spec).replace("|", "\\|")
        rows.append(f"| `{spec.name}` | `{_value(spec.default)}` | {allowed} | {'no' if spec.read_only else 'yes'} "
                    f"| {spec.description} |")
    return "\n".join(rows + [TABLE_END]) + "\n"


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    (root / "config" / "depth.yaml").write_text(yaml_text())
    page = root / "docs" / "node.md"
    text = page.read_text()
    start, end = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END) + 1
    page.write_text(text[:start] + markdown_table() + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
