"""The house rules of docs/ARCHITECTURE.md, read from the source: imports only flow down the layers, no module
imports itself through others, the shared leaf is torch-free, and no source file outgrows one idea."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("contract", "models", "training", "export", "service", "loadtest", "bench")
# what each layer may import from the project (besides itself); everything else is an upward or sideways import
ALLOWED = {
    "contract": set(),
    "models": {"contract"},
    "training": {"contract", "models"},
    "export": {"contract", "models"},
    "service": {"contract"},
    "loadtest": {"contract"},
    "bench": {"contract", "export"},
}
MAX_LINES = 450


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """Every project module `path` imports, at any depth of its code (TYPE_CHECKING blocks and function
    bodies included: a cycle hidden there is still a cycle)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pkg import mod` imports pkg.mod when that is a module
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and _exists(name):
                found.add(name)
    return found


def _exists(name: str) -> bool:
    base = REPO.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


GRAPH = {module_name(p): project_imports(p) - {module_name(p)} for p in sources()}


def test_no_source_file_imports_relatively():
    """The graph above reads absolute imports only; a relative one (``from . import x``) would cross layers
    unseen, so there is none."""
    relative = [
        f"{p.relative_to(REPO)}:{node.lineno}"
        for p in sources()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative, relative


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_imports_flow_down_the_layers(path):
    layer = path.relative_to(REPO).parts[0]
    upward = {m for m in GRAPH[module_name(path)] if m.split(".")[0] not in ALLOWED[layer] | {layer}}
    assert not upward, f"{layer}/ may import only {sorted(ALLOWED[layer])} from the project, not {sorted(upward)}"


def test_no_import_cycles():
    """Depth-first search over the module graph; a back edge is a cycle (a package's __init__ counts as the
    package, so `service` -> `service.x` -> `service` is one too)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_shared_leaf_is_torch_free():
    for path in sorted((REPO / "contract").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in ("torch", "onnx") for n in names), f"{path} imports {names}"


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_source_file_outgrows_one_idea(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{lines} lines; split it by concern (at most {MAX_LINES})"


def test_the_rules_catch_what_they_forbid(tmp_path):
    """The checks themselves can fail: an upward import and a cycle written to scratch files are found."""
    up = tmp_path / "up.py"
    up.write_text("from training.image_classification import train\nimport service.settings\n")
    assert project_imports(up) >= {"training.image_classification", "service.settings"}
    hidden = tmp_path / "hidden.py"
    hidden.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from service import settings\n")
    assert "service.settings" in project_imports(hidden)
