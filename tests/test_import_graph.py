"""The product packages' import graph: one-way dependencies, no cycles, no hidden imports, no
torch where it does not belong, and no dispatch on a layer's kind outside the registries."""

import ast
import subprocess
import sys

import pytest

from core.kinds import KINDS
from core.paths import ROOT

PACKAGES = ("core", "golden", "hw", "fpga", "quant", "sim", "importers")
#: Which product packages each package may import (besides itself).
ALLOWED = {
    "core": set(),
    "golden": {"core"},
    "hw": {"core", "golden"},
    "fpga": {"core", "golden", "hw"},
    "quant": {"core", "golden"},
    "sim": {"core", "golden", "hw"},
    "importers": {"core", "quant"},        # nothing imports importers
}


def _modules():
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


MODULES = _modules()


def _resolve(module, node):
    """Return the product modules an import node names, from inside ``module``."""
    package = module if MODULES[module].stem == "__init__" else module.rsplit(".", 1)[0]
    if isinstance(node, ast.Import):
        bases = [alias.name for alias in node.names]
        subs = [None] * len(bases)
    else:
        base = node.module or ""
        if node.level:
            base = package + (f".{base}" if base else "")
        bases = [base] * len(node.names)
        subs = [alias.name for alias in node.names]
    out = []
    for base, sub in zip(bases, subs, strict=True):
        if base.split(".")[0] not in PACKAGES:
            continue
        target = f"{base}.{sub}" if sub and f"{base}.{sub}" in MODULES else base
        while target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        out.append(target)
    return out


def _imports():
    """Return ``{module: [(target, line, top_level)]}``."""
    result = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        for node in tree.body:                  # imports under `if`/`try` at module level
            if isinstance(node, (ast.If, ast.Try)):
                top |= {id(n) for n in ast.walk(node)}
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, node):
                    edges.append((target, node.lineno, id(node) in top))
        result[module] = edges
    return result


IMPORTS = _imports()


def test_no_project_import_inside_a_function():
    hidden = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {target}"
              for m, edges in IMPORTS.items() for target, line, top in edges if not top]
    assert hidden == []


def test_dependencies_point_one_way():
    wrong = []
    for module, edges in IMPORTS.items():
        package = module.split(".")[0]
        for target, line, _ in edges:
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package] \
                    and target not in ALLOWED[package]:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line} imports {target}")
    assert wrong == []


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in edges if t != m}) for m, edges in IMPORTS.items()}
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize("package", ["core", "golden", "hw", "fpga", "sim", "sim.run"])
def test_importing_loads_no_torch(package):
    code = (f"import sys, {package}; "
            f"assert 'torch' not in sys.modules, 'torch was loaded'; "
            f"assert ({package!r}.split('.')[0] not in ('core', 'golden')) or "
            f"'amaranth' not in sys.modules, 'amaranth was loaded'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def _kind_dispatch(path):
    """Comparisons of something named ``kind`` with a layer-kind name."""
    names = set(KINDS)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare):
            continue
        parts = [node.left, *node.comparators]
        literals = set()
        for part in parts:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                literals.add(part.value)
            elif isinstance(part, (ast.Tuple, ast.List, ast.Set)):
                literals |= {e.value for e in part.elts if isinstance(e, ast.Constant)}
        if literals & names and any("kind" in ast.unparse(p) for p in parts):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_dispatch_on_kind_outside_the_registries():
    """Equivalent shell search: grep -rnE "kind\\S*\\s*(==|!=|in)\\s*[\\"'(\\[]" core golden hw
    fpga quant sim --include=*.py (core/kinds.py, the table itself, is exempt)."""
    found = [hit for module, path in MODULES.items() if module != "core.kinds"
             for hit in _kind_dispatch(path)]
    assert found == []
