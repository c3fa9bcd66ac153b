"""The private names of other libraries the core uses are the listed ones (pong_train/private_apis.py), and each is
still where the list says; the search and the pin can both fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from pong_train.private_apis import PRIVATE_APIS, PrivateUse, foreign_private_names, unlisted

CORE = Path(__file__).resolve().parents[1] / "pong_train"


@pytest.mark.parametrize("use", PRIVATE_APIS, ids=lambda use: f"{use.module}.{use.name}")
def test_each_private_name_the_core_uses_is_still_there(use):
    use.locate()  # a release that moved it fails here, by name


def test_the_core_uses_no_private_name_its_list_leaves_out():
    assert unlisted(CORE, PRIVATE_APIS) == {}, "missing from pong_train/private_apis.py"


def test_the_search_finds_each_kind_of_foreign_private_name_and_not_the_files_own(tmp_path):
    (tmp_path / "uses.py").write_text(
        "from ray._private.services import canonicalize\n"
        "from ray.tune import Tuner\n"
        "def _mine(runner):\n"
        "    runner._own = 1\n"
        "    Tuner.restore('x', _resume_config=None)\n"
        "    return runner._ongoing, getattr(runner, '_hidden'), runner._own, _mine, f'{runner}_seed'\n")
    assert sorted(foreign_private_names(tmp_path)) == ["_hidden", "_ongoing", "_resume_config", "ray._private.services"]


@pytest.mark.parametrize("name", ["Tuner.restore._no_such_keyword", "Tuner._no_such_method", "NoSuchTuner.restore"])
def test_a_private_name_that_moved_fails_its_pin(name):
    with pytest.raises(AssertionError, match="moved"):
        PrivateUse("ray.tune", name, "nowhere", "a test").locate()
