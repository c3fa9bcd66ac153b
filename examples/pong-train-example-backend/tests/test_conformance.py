"""The example backend passes pong-train's conformance suite, in one class."""

from pong_train.testing import BackendConformance


class TestExampleBackend(BackendConformance):
    backend = "example"
    run_args = ["--stop", '{"training_iteration": 2}']
