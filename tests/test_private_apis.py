"""The private APIs the azureml backend uses are the listed ones, and each is still where the list says."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from pong_train_azureml.private_apis import PRIVATE_APIS

BACKENDS = Path(__file__).resolve().parents[1] / "backends"
# How a private API shows in the source: a dotted path with a private part, or a private name of a public module.
DOTTED = re.compile(r"\b(?:azure|azureml|ray)(?:\.\w+)+")
PRIVATE_NAME = re.compile(r"\b_internal_kv_\w+|\._to_\w+\(")


def private_uses(line: str) -> list[str]:
    code = line.split("#", 1)[0]
    return [path for path in DOTTED.findall(code) if "._" in path] + PRIVATE_NAME.findall(code)


@pytest.mark.parametrize("use", PRIVATE_APIS, ids=lambda use: f"{use.module}.{use.name}")
def test_each_listed_private_api_is_still_there(use):
    found = importlib.import_module(use.module)  # a release that moved it fails here, by name
    for part in use.name.split("."):
        assert hasattr(found, part), f"{use.module}.{use.name} moved; see private_apis.py for its use"
        found = getattr(found, part)


def test_the_backend_uses_no_private_api_the_list_leaves_out():
    listed = {use.module for use in PRIVATE_APIS} | {use.name.rsplit(".", 1)[-1] for use in PRIVATE_APIS}
    unlisted = []
    for path in sorted(BACKENDS.rglob("*.py")):
        if path.name == "private_apis.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for found in private_uses(line):
                if found.removeprefix(".").removesuffix("(") not in listed:
                    unlisted.append(f"{path.relative_to(BACKENDS)}:{number}: {found}")
    assert unlisted == [], f"private APIs missing from backends/pong_train_azureml/private_apis.py: {unlisted}"


def test_the_search_finds_what_it_is_for():
    """The pattern catches each kind of private use named in the list's docstring (a check that cannot fail is none)."""
    assert private_uses("from azure.ai.ml._utils._asset_utils import x") == ["azure.ai.ml._utils._asset_utils"]
    assert private_uses("internal_kv._internal_kv_put(k, v)") == ["_internal_kv_put"]
    assert private_uses("node._to_job().dump(f)") == ["._to_job("]
    assert private_uses("from ray._private.services import c") == ["ray._private.services"]
    assert private_uses("from azure.ai.ml.entities import CommandJob  # not ray._private") == []
