"""The codebase's own rules: short functions, errors raised where they happen."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("vsdsfn", "training", "bench")
MAX_LINES = 60


def _functions():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield path.relative_to(ROOT), node


def test_no_function_is_longer_than_60_lines():
    long = [f"{p}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)" for p, n in _functions()
            if n.end_lineno - n.lineno + 1 > MAX_LINES]
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def test_only_main_raises_system_exit():
    """Library code raises domain errors; only ``main()`` turns them into exit codes."""
    found = []
    for path, fn in _functions():
        if fn.name == "main":
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Raise) and node.exc is not None:
                call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(call, ast.Name) and call.id == "SystemExit":
                    found.append(f"{path}:{node.lineno} in {fn.name}")
    assert not found, "SystemExit outside main():\n" + "\n".join(found)
