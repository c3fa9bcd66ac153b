"""The package's shape, as docs/architecture.md describes it: modules of a readable size, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"pong_train": ROOT / "pong_train", "pong_train_azureml": ROOT / "backends" / "pong_train_azureml"}
MAX_LINES = 300


def modules(package: str) -> dict[str, Path]:
    folder = PACKAGES[package]
    found = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).with_suffix("").parts
        found[".".join((package, *parts)).removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `path` imports, at the top or inside a function alike."""
    package = next(name for name in known if "." not in name)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            if submodules:
                found |= submodules
            elif node.module in known and node.module != package:  # names from a module, not the package's own
                found.add(node.module)
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph`, as the list of modules along it, or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported] if imported in path else [module, imported]
            if imported not in state and (found := visit(imported, path + [imported])):
                return found
        state[module] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"b"}}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    known = modules(package)
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    assert cycle(graph) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_300_lines(package):
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules(package).items()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}
