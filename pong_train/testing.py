"""A conformance suite for backend plugins: subclass `BackendConformance` in your tests and name your backend.

    from pong_train.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "mine"

Every backend shipped with pong-train passes it, and so must a third-party one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pong_train.config import TrainConfig
from pong_train.job import Job, Run
from pong_train.plugins import backends, get_plugin_manager, results_by_plugin


def make_job(backend: str, tmp_path: Path, **fields: Any) -> Job:
    pm = get_plugin_manager()
    return Job(backend=backend, run="IMPALA", env="PongNoFrameskip-v4", config=TrainConfig(**fields),
               stop={"training_iteration": 1}, storage_path=tmp_path / "runs", hook=pm.hook)


class BackendConformance:
    """What every backend owes: one declaration, hooks that keep to their own jobs, options that fit in,
    and (with `run_args`) a real run through the command line."""

    backend: ClassVar[str]
    """The name the backend answers to with `--backend`."""
    run_args: ClassVar[list[str] | None] = None
    """Arguments for a quick real run (`--backend NAME --preset smoke` plus these); None skips it."""

    @pytest.fixture
    def plugin(self) -> tuple[Any, Any]:
        pm = get_plugin_manager()
        declared = backends(pm)
        assert self.backend in declared, f"no installed plugin declares backend {self.backend!r}"
        return pm, pm.get_plugin(declared[self.backend][1])

    def test_declared_once_with_a_one_line_description(self, plugin):
        pm, _ = plugin
        names = [b.name for _, found in results_by_plugin(pm, "pong_train_backends") for b in found]
        assert names.count(self.backend) == 1
        description = backends(pm)[self.backend][0].description
        assert description.strip() and "\n" not in description

    def test_launch_leaves_other_backends_jobs_alone(self, plugin, tmp_path):
        _, module = plugin
        assert hasattr(module, "pong_train_launch"), "a backend implements pong_train_launch"
        assert module.pong_train_launch(job=make_job(f"not-{self.backend}", tmp_path)) is None
        assert not (tmp_path / "runs").exists()

    def test_result_loggers_only_for_its_own_runs(self, plugin, tmp_path):
        _, module = plugin
        if not hasattr(module, "pong_train_result_loggers"):
            pytest.skip("this backend hands out no loggers")
        other = Run(job=make_job(f"not-{self.backend}", tmp_path), run_dir=tmp_path)
        assert module.pong_train_result_loggers(run=other) == []

    def test_options_fit_the_command_line(self, plugin):
        from pong_train.cli import build_cli

        pm, module = plugin
        cli = build_cli(pm)  # raises on a clash with a core option or another plugin's
        names = {name for name, _ in results_by_plugin(pm, "pong_train_cli_options")}
        for option in cli.params:
            if getattr(option, "pong_train_plugin", None) in names:
                assert option.help, f"option {option.opts[0]} has no help text"

    def test_listed_with_version_and_distribution(self):
        listing = subprocess.run([sys.executable, "-m", "pong_train", "backends"], capture_output=True, text=True,
                                 timeout=120)
        assert listing.returncode == 0, listing.stderr
        [row] = [line.split() for line in listing.stdout.splitlines()[1:] if line.split()[0] == self.backend]
        assert row[1] != "-" and row[2] != "-", "install the backend as a distribution with an entry point"

    @pytest.mark.slow
    def test_a_real_run_through_the_command_line(self, tmp_path):
        if self.run_args is None:
            pytest.skip("no run_args for a quick real run")
        proc = subprocess.run(
            [sys.executable, "-m", "pong_train", "--backend", self.backend, "--preset", "smoke",
             "--storage-path", str(tmp_path / "runs"), *self.run_args],
            capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
