"""pong-train's own backends, and the example third-party one, pass the conformance suite plugin authors use."""

from pong_train.testing import BackendConformance


class TestLocalBackend(BackendConformance):
    backend = "local"
    run_args = ["--stop", '{"training_iteration": 2}']


class TestAzureMLBackend(BackendConformance):
    backend = "azureml"
    run_args = ["--dry-run", "--compute", "ray-cluster", "--instance-count", "2"]


class TestExampleBackend(BackendConformance):
    """The example under examples/, installed as its own distribution (scripts/setup.sh dev does it)."""

    backend = "example"
    run_args = ["--stop", '{"training_iteration": 2}', "--example-every", "1"]
