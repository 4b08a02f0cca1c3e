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


# ----------------------------------------------------------------------------- imports
def _modules() -> dict[str, Path]:
    """Every module of the project by its import name (tests by their file's stem, as
    pytest imports them)."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "tests").glob("*.py")):
        mods[path.stem] = path
    return mods


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) of every import in the file, also those inside
    functions (they run too), but not those under ``if TYPE_CHECKING:``; relative imports
    resolved."""
    tree = ast.parse(path.read_text(), str(path))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body for n in ast.walk(stmt)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.append((module, [alias.name for alias in node.names], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (``from pkg import mod`` counts as
    importing ``pkg.mod``; importing a submodule does not count its parent packages)."""
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for module, names, _ in _imports(name, path):
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in mods]
            deps.update(subs)
            if module in mods and (len(subs) < len(names) or not names):
                deps.add(module)
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """No module imports, directly or through others, a module that imports it back (also
    through imports inside functions)."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]   # the check works
    graph = _graph()
    assert "vsdsfn.engine" in graph["vsdsfn.filter"] and "training.datasets" in graph["training.train"]
    assert not _cycles(graph), "import cycles:\n" + "\n".join(" <-> ".join(c) for c in _cycles(graph))


def test_no_private_names_across_modules():
    """A name shared between modules is public: no module of the runtime, training/ or
    bench/ imports another's ``_private`` name, and no test imports another test file
    (shared fixtures and helpers live in conftest.py)."""
    mods = _modules()
    found = []
    for name, path in mods.items():
        for module, names, line in _imports(name, path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if path.parent.name != "tests" and module != name:
                found += [f"{where} imports {module}.{n}" for n in names if n.startswith("_") and not n.endswith("__")]
            if path.parent.name == "tests" and module.startswith("test_"):
                found.append(f"{where} imports the test file {module}")
    assert not found, "\n".join(found)
