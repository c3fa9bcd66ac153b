"""pong-train's own backends, and the example third-party one, pass the conformance suite plugin authors use."""

from pong_train.testing import BackendConformance


class TestLocalBackend(BackendConformance):
    backend = "local"


class TestAzureMLBackend(BackendConformance):
    """Runs jobs on Azure ML: its command-line launch is a dry run (no network, no credentials)."""

    backend = "azureml"
    trains_here = False
    extra_args = ["--dry-run", "--compute", "ray-cluster", "--instance-count", "2"]


class TestExampleBackend(BackendConformance):
    """The example under examples/, installed as its own distribution (scripts/setup.sh dev does it)."""

    backend = "example"
