"""depth_node's parameter values read as the node would get them: a ROS 2 params file, then ``NAME:=VALUE``
overrides, checked against the parameter table (``parameters.py``). Used by ``ppd-bag-eval``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .parameters import SPECS, NodeSettings, check_settings

NODE_NAMES = ("**", "*", "depth_node")
"""Node names (the last part of a params-file key) whose ``ros__parameters`` apply."""


def node_parameters(params_file: Path | None, overrides: list[tuple[str, str]]) -> NodeSettings:
    """depth_node's settings: the defaults, then the params file's values, then the (name, value text)
    overrides (``-p NAME:=VALUE``, value text read as YAML).

    Raises:
        ValueError: an unreadable params file, an unknown name (the message lists the valid ones), a value
            of the wrong type, or values ``check_settings`` rejects.
    """
    given: dict[str, Any] = {}
    if params_file is not None:
        given.update(_params_file_values(params_file))
    for name, text in overrides:
        given[name] = yaml.safe_load(text) if text else ""
    unknown = sorted(set(given) - set(SPECS))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; depth_node's are: {', '.join(SPECS)}")
    settings = NodeSettings(**{name: _typed(name, value) for name, value in given.items()})
    reason = check_settings(settings)
    if reason:
        raise ValueError(reason)
    return settings


def _params_file_values(path: Path) -> dict[str, Any]:
    """The ``ros__parameters`` of the file's ``/**``, ``*`` and ``depth_node`` entries (any namespace)."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read the params file {path}: {error}") from error
    found: dict[str, Any] = {}

    def walk(entry, key: str) -> None:
        if not isinstance(entry, dict):
            return
        if "ros__parameters" in entry and key.rstrip("/").rsplit("/", 1)[-1] in NODE_NAMES:
            found.update(entry["ros__parameters"] or {})
        for child, value in entry.items():
            if child != "ros__parameters":
                walk(value, str(child))
    walk(document, "")
    if not found:
        raise ValueError(f"{path}: no ros__parameters for depth_node (keys '/**' or 'depth_node')")
    return found


def _typed(name: str, value: Any) -> Any:
    """``value`` as the type of the parameter's default (an int is accepted for a float), or ValueError."""
    default = SPECS[name].default
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok, value = isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    elif isinstance(default, str):
        ok, value = value is not None, str(value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"parameter {name} takes a {type(default).__name__}, got {value!r}")
    return value
