"""The package's imports run one way: no cycle between nncore's modules, no
import of another nncore module hidden inside a function to dodge one, and
every module importable on its own in a fresh interpreter."""
import ast
import pathlib
import subprocess
import sys

import pytest

import nncore

PACKAGE = pathlib.Path(nncore.__file__).parent


def _modules():
    """{dotted name: path} of every Python module of the installed package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    out["nncore._core"] = None      # the compiled extension: imports nothing of ours
    return out


MODULES = _modules()


def _imports(name, path):
    """[(imported nncore module, at module level?)] of one module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = {id(node) for node in tree.body}
    # a module-level `if`/`try` still runs at import time
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from pkg import mod` imports the module; `from mod import name` the module
            targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES:
                found.append((target, id(node) in top))
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items() if path is not None}

# Tools users run, which may import any part of the package at call time.
LAZY_ALLOWED = {"nncore.__main__"}


def test_no_import_of_an_nncore_module_inside_a_function():
    hidden = sorted((name, target) for name, edges in GRAPH.items() if name not in LAZY_ALLOWED
                    for target, top in edges if not top and target != "nncore._source_checkout")
    assert hidden == []


def test_no_module_imports_the_top_level_package():
    offenders = sorted(name for name, edges in GRAPH.items()
                       if name not in LAZY_ALLOWED and name != "nncore"
                       and any(t == "nncore" for t, _ in edges))
    assert offenders == []


def test_no_import_cycle():
    # Every edge counts, at module level or not; the command line sits on top.
    edges = {name: {t for t, _ in targets} - {name} for name, targets in GRAPH.items()
             if name not in LAZY_ALLOWED}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"
    for name in sorted(edges):
        if name not in state:
            visit(name, [name])


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_on_its_own(module):
    subprocess.run([sys.executable, "-P", "-c", f"import {module}"], check=True, timeout=120)


def test_the_graph_sees_imports():
    # the checks above are only as good as the parser: it must see real edges
    assert ("nncore.layers.base", True) in GRAPH["nncore.layers.dense"]
    assert any(t == "nncore.serialize" for t, _ in GRAPH["nncore.estimator_base"])
