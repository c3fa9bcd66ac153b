"""The private APIs the azureml backend uses are the listed ones, and each is still where the list says."""

from __future__ import annotations

from pathlib import Path

import pytest

from pong_train.private_apis import unlisted
from pong_train_azureml.private_apis import PRIVATE_APIS

PACKAGE = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("use", PRIVATE_APIS, ids=lambda use: f"{use.module}.{use.name}")
def test_each_listed_private_api_is_still_there(use):
    use.locate()  # a release that moved it fails here, by name


def test_the_backend_uses_no_private_api_the_list_leaves_out():
    assert unlisted(PACKAGE, PRIVATE_APIS) == {}, "missing from backends/pong_train_azureml/private_apis.py"


def test_the_node_side_imports_nothing_of_the_submit_side():
    """The code that runs on the job's nodes (in_job and what it imports) needs neither the spec writer nor the
    service client, so a node never loads the SDK's submit side to train."""
    import subprocess
    import sys

    loaded = subprocess.run([sys.executable, "-c", "import sys, pong_train_azureml.in_job; print(' '.join(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert {"pong_train_azureml.spec", "pong_train_azureml.service", "pong_train_azureml.resume"} & set(loaded) == set()
