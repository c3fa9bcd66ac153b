"""The package's shape, as docs/architecture.md describes it: modules of a readable size, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"pong_train": ROOT / "pong_train",
            **{folder.name: folder for folder in sorted((ROOT / "backends").iterdir()) if (folder / "__init__.py").exists()}}
MAX_LINES = 300
MAX_FUNCTION_LINES = 50


def modules(package: str) -> dict[str, Path]:
    """The package's modules, its tests (a backend keeps them beside it) left out."""
    folder = PACKAGES[package]
    found = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).with_suffix("").parts
        if "tests" not in parts:
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


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """The functions of `path` longer than `limit` lines (docstring included), as NAME:LINES."""
    return [f"{node.name}:{node.end_lineno - node.lineno + 1}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= limit]


def test_the_function_length_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert long_functions(tmp_path / "long.py") == [f"long:{MAX_FUNCTION_LINES + 1}"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_50_lines(package):
    found = {name: long for name, path in modules(package).items() if (long := long_functions(path))}
    assert found == {}


@pytest.mark.slow
def test_a_built_wheel_holds_every_module(tmp_path):
    """A non-editable install (what an Azure ML job's `pip install .` makes) has every module of the source tree."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info",
                                                                "__pycache__", "examples"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True, timeout=300)
    [wheel] = (tmp_path / "wheel").glob("pong_train-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    expected = {f"{package}/{path.relative_to(PACKAGES[package]).as_posix()}" for package in PACKAGES
                for path in modules(package).values()}
    assert expected - shipped == set()
    assert [name for name in shipped if "/tests/" in name] == []  # a backend's tests stay in the source tree


def test_the_architecture_page_lists_every_module_of_the_package():
    """docs/architecture.md's module table is `ls pong_train`, so it cannot fall behind the code."""
    import re

    page = (ROOT / "docs" / "architecture.md").read_text()
    table = page.split("## Modules of `pong_train/`", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))
    present = {p.name + ("/" if p.is_dir() else "") for p in PACKAGES["pong_train"].iterdir()
               if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert listed == present


def test_the_command_line_page_tables_name_every_option_and_preset():
    from pong_train.cli.train import cli
    from pong_train.config import PRESETS

    page = (ROOT / "docs" / "options.md").read_text()
    options_table = page.split("| option | meaning |", 1)[1].split("\n\n", 1)[0]
    flags = {opt for param in cli.params for opt in param.opts if opt.startswith("--") and opt != "--help"}
    assert {flag for flag in flags if flag not in options_table} == set()
    presets_table = page.split("| preset | what it is |", 1)[1].split("\n\n", 1)[0]
    assert {name for name in PRESETS if name != "default" and f"| `{name}` |" not in presets_table} == set()
    preset_row = next(line for line in options_table.splitlines() if line.startswith("| `--preset "))
    assert set(preset_row.split("`")[1].removeprefix("--preset ").split("\\|")) == set(PRESETS) - {"default"}


def test_the_core_imports_neither_mlflow_nor_azure():
    """MLflow belongs to the mlflow plugin and Azure to the azureml one: nothing in pong_train/ imports either,
    not even inside a function."""
    import ast

    found = []
    for path in PACKAGES["pong_train"].rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {name}" for name in names if name.split(".")[0] in ("mlflow", "azure", "azureml")]
    assert found == []


@pytest.mark.parametrize("module", ["pong_train.job", "pong_train.plugins", "pong_train_local", "pong_train_mlflow",
                                    "pong_train_azureml"])
def test_loading_a_job_or_a_plugin_imports_no_heavy_library(module):
    """Every plugin imports pong_train.job, and the command line loads every plugin to list its options: none of
    them may pull in gymnasium, Ray, torch or MLflow just by being imported."""
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert {"gymnasium", "ray", "torch", "mlflow", "ale_py"} & set(loaded) == set()
