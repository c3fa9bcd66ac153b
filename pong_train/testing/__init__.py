"""The conformance suite for backend plugins: what users rely on, whatever the backend.

Subclass `BackendConformance` in a test module of your distribution and name your backend:

    from pong_train.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "mine"

pytest then runs the suite against the installed backend (install your distribution first: the
suite finds it through the `pong_train` entry-point group, as `pong-train` does). The tests marked
`slow` train for real (the smoke preset, a few minutes in all); `pytest -m "not slow"` skips them.

This module is also a pytest plugin (entry point `pytest11`), so the `slow` mark is registered in
any project that has pong-train installed, and the fixtures `storage` (a folder for run directories) and
`three_node_cluster` (a real three-node Ray cluster on this machine) are there for any test. Every backend shipped with pong-train passes the suite,
and so must a third-party one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pong_train.job import JOB_FILE, Invocation, Job, Run
from pong_train.plugins import PluginManager, get_plugin_manager
from pong_train.testing.recorders import BackendLoggers, FailingLogger, Observer, RowRecorder

pytest_plugins = ["pong_train.testing.tools"]  # its fixtures: storage, three_node_cluster
METRICS_FILE = "metrics.jsonl"
STANDARD_FILES = (JOB_FILE, "run.json", METRICS_FILE, "placement.json", "curve.png")
"""What the core writes in every run directory, whatever the backend (see docs/plugins.md)."""
SLOW = "slow: takes seconds or more (trains for real, or starts Ray, MPI or an Azure SDK); deselect with -m 'not slow'"


def pytest_configure(config: pytest.Config) -> None:
    """Register the suite's marks, so that a project using it sees no unknown-mark warning."""
    config.addinivalue_line("markers", SLOW)


class BackendConformance:
    """What every backend owes its users, as pytest tests: subclass it and set `backend`.

    Fast checks: the backend is declared once, its plugin is not set aside as broken, it leaves other
    backends' jobs and runs alone, its options fit the command line, `pong-train backends` lists it
    with a version and distribution, and bad input is one line with exit code 2.

    Slow checks (a backend that trains in this process, `trains_here`): a real smoke run through
    `pong_train.cli.main`, interrupted with Ctrl-C (exit 130) and continued with `--resume` (exit 0),
    leaves the standard files and one `metrics.jsonl` row per result, and the backend's own loggers
    take exactly those rows in order; a logger that loses results makes the run exit 3 with its
    checkpoints kept. A backend that runs jobs elsewhere gets one launch through the command line
    with `extra_args` instead (a dry run, say), which must exit 0.
    """

    backend: ClassVar[str]
    """The name the backend answers to with `--backend`."""
    extra_args: ClassVar[list[str]] = []
    """The backend's own options, given on every command line the suite runs (`--resume` included)."""
    trains_here: ClassVar[bool] = True
    """True when the backend trains in the `pong-train` process (through `run_training`), where the suite
    can watch the results; False for a backend that runs jobs elsewhere."""

    # -- helpers a subclass may use or override ---------------------------------------------------

    def plugin_manager(self, *extra_plugins: object) -> PluginManager:
        """The plugin manager the suite runs pong-train with: the installed plugins, then `extra_plugins`."""
        return get_plugin_manager(extra_plugins=extra_plugins)

    def check_run(self, run_dir: Path, rows: list[dict[str, Any]]) -> None:
        """Called after the interrupted and resumed run completed, with its run directory and its
        `metrics.jsonl` rows: override it to check what your backend wrote there."""

    def backend_plugin(self, pm: PluginManager) -> str:
        """The name of the plugin that declares the backend (failing with the reason when none does)."""
        declared = pm.backends()
        if self.backend not in declared:
            broken = "; ".join(f"{b.label}: {b.problem}" for b in pm.broken) or "none"
            pytest.fail(f"no installed plugin declares backend {self.backend!r} (installed: "
                        f"{', '.join(sorted(declared))}; plugins not loaded: {broken})")
        return declared[self.backend][1]

    def impl(self, pm: PluginManager, hook: str) -> Any:
        """The backend plugin's implementation of `hook`, or None."""
        name = self.backend_plugin(pm)
        return next((impl for impl in pm.impls(hook) if impl.plugin_name == name), None)

    def main(self, argv: list[str], pm: PluginManager) -> tuple[int, str]:
        """`pong-train ARGV` in this process; (exit status, what it wrote on stderr)."""
        from pong_train.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv, plugin_manager=pm)
        print(err.getvalue(), end="")  # shown by pytest when the test fails
        return code, err.getvalue()

    def smoke_args(self, storage: Path, stop: dict[str, float] | str) -> list[str]:
        """`--backend NAME --preset smoke --stop STOP --storage-path STORAGE` and `extra_args`."""
        return ["--backend", self.backend, "--preset", "smoke", "--stop", stop if isinstance(stop, str) else
                json.dumps(stop), "--storage-path", str(storage), *self.extra_args]

    # -- fast checks ------------------------------------------------------------------------------

    def test_declared_once_with_a_one_line_description(self):
        pm = self.plugin_manager()
        self.backend_plugin(pm)  # a name two plugins declare fails here, naming both
        names = [b.name for _, found in pm.discover("pong_train_backends") for b in found]
        assert names.count(self.backend) == 1, f"backend {self.backend!r} is declared {names.count(self.backend)} times"
        description = pm.backends()[self.backend][0].description
        assert description.strip() and "\n" not in description, "the description is one non-empty line"

    def test_its_plugins_load_and_fit_the_hooks(self):
        pm = self.plugin_manager()
        name = self.backend_plugin(pm)
        dist = pm.distribution(name)[0]
        broken = [b for b in pm.broken if b.name == name or (dist != "-" and b.dist == dist)]
        assert not broken, "; ".join(f"{b.label} is not loaded: {b.problem}" for b in broken)
        assert self.impl(pm, "pong_train_launch") is not None, "a backend implements pong_train_launch"

    def test_launch_leaves_other_backends_jobs_alone(self, tmp_path):
        pm = self.plugin_manager()
        job = Job(backend=f"not-{self.backend}", storage_path=tmp_path / "runs")
        status = pm.call("pong_train_launch", self.impl(pm, "pong_train_launch"), job=job,
                         invocation=Invocation(plugin_manager=pm))
        assert status is None, "pong_train_launch returns None for a job of another backend"
        assert not (tmp_path / "runs").exists(), "a job of another backend left files behind"

    def test_result_loggers_only_for_its_own_runs(self, tmp_path):
        pm = self.plugin_manager()
        impl = self.impl(pm, "pong_train_result_loggers")
        if impl is None:
            pytest.skip("the backend hands out no loggers (the core's console line and metrics.jsonl only)")
        other = Run(job=Job(backend=f"not-{self.backend}", storage_path=tmp_path), run_dir=tmp_path,
                    invocation=Invocation(plugin_manager=pm))
        assert list(pm.call("pong_train_result_loggers", impl, run=other) or []) == [], \
            "pong_train_result_loggers hands out loggers for another backend's run"

    def test_options_fit_the_command_line(self):
        from pong_train.cli import with_plugins
        from pong_train.plugin_options import PLUGIN_ATTR

        pm = self.plugin_manager()
        name = self.backend_plugin(pm)
        group = with_plugins(pm)  # a clash with a core option or another plugin's fails here, naming the plugin
        assert name not in {b.name for b in pm.broken}, [b.problem for b in pm.broken if b.name == name]
        for option in group.params:
            if getattr(option, PLUGIN_ATTR, None) == name:
                assert option.help.removeprefix(f"[{name}]").strip(), f"option {option.opts[0]} has no help text"

    def test_listed_with_version_and_distribution(self, capsys):
        from pong_train.cli import main

        pm = self.plugin_manager()
        self.backend_plugin(pm)
        capsys.readouterr()
        assert main(["backends"], plugin_manager=pm) == 0
        rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()]
        [row] = [row for row in rows if row[0] == self.backend]
        assert row[1] != "-" and row[2] != "-", "install the backend as a distribution with an entry point"

    def test_bad_input_is_one_line_exit_2_and_leaves_nothing(self, tmp_path):
        storage = tmp_path / "runs"
        code, err = self.main(self.smoke_args(storage, '{"episode_reward_meen": 1}'), self.plugin_manager())
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("pong-train: warning:")]
        assert code == 2, f"exit {code} for a misspelt stop criterion"
        assert len(lines) == 1 and lines[0].startswith("pong-train: error:"), err
        assert not storage.exists(), "bad input left files behind"

    def test_an_unusable_storage_path_is_bad_input(self, tmp_path):
        if not self.trains_here:
            pytest.skip("the backend trains elsewhere")
        storage = tmp_path / "a-file"
        storage.write_text("")
        code, err = self.main(self.smoke_args(storage / "runs", {"training_iteration": 1}), self.plugin_manager())
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("pong-train: warning:")]
        assert code == 2, f"exit {code} for --storage-path under a file (UsageError from run_training is exit 2)"
        assert len(lines) == 1 and "Traceback" not in err, err

    # -- slow checks: real training ----------------------------------------------------------------

    def standard_files(self, run_dir: Path, status: str) -> list[dict[str, Any]]:
        """The standard files of a run that ended with `status`; returns its metrics.jsonl rows."""
        missing = [name for name in STANDARD_FILES if not (run_dir / name).is_file()]
        assert not missing, f"{run_dir} lacks {', '.join(missing)}"
        run_record = json.loads((run_dir / "run.json").read_text())
        assert (run_record["status"], run_record["backend"]) == (status, self.backend), run_record
        assert Job.load(run_dir / JOB_FILE).backend == self.backend
        rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
        for row in rows:
            assert isinstance(row["episodes_total"], int) and isinstance(row["timesteps_total"], int), row
            if row["episodes_total"] == 0:
                assert row["episode_reward_mean"] is None, "no episode yet: episode_reward_mean is None"
        return rows

    @staticmethod
    def iterations(rows: list[dict[str, Any]]) -> list[int]:
        return [row["training_iteration"] for row in rows]

    def assert_backend_took(self, watch: BackendLoggers, rows: list[dict[str, Any]],
                            first: BackendLoggers | None = None) -> None:
        """Every logger of the backend took exactly `rows`, in order, left them unchanged, and was closed; for a
        resumed run, the backend handed out as many loggers as it did for the `first` run."""
        assert not watch.unattributed, "the backend's loggers could not be told from other plugins'"
        if first is not None:
            assert len(watch.loggers) >= len(first.loggers), (
                f"the backend's loggers took none of the {len(rows)} rows metrics.jsonl holds for the resumed run: "
                f"it handed out {len(first.loggers)} logger(s) for the run, {len(watch.loggers)} for its resumption")
        assert watch.calls or not watch.implemented, (
            f"the backend's loggers took none of the {len(rows)} rows metrics.jsonl holds: pong_train_result_loggers "
            "was never called for this run (does its launch train with a plugin manager of its own?)")
        assert watch.calls <= 1, f"pong_train_result_loggers was called {watch.calls} times for one run"
        for logger in watch.loggers:
            name = type(logger).__name__
            missed = sorted(set(self.iterations(rows)) - set(self.iterations(logger.rows)))
            assert not missed, f"{name} missed the rows of iterations {missed} that metrics.jsonl holds"
            assert self.iterations(logger.rows) == self.iterations(rows), f"{name} took other rows than metrics.jsonl"
            assert logger.rows == rows, f"{name} was handed other rows than metrics.jsonl holds"
            assert not logger.changed_rows, f"{name} changed the row it was handed (every logger shares it)"
            assert logger.closed, f"{name} was never closed"

    @pytest.mark.slow
    def test_interrupted_run_resumes_with_every_result_once(self, tmp_path):
        if not self.trains_here:
            pytest.skip("the backend trains elsewhere; see test_launches_through_the_command_line")
        storage = tmp_path / "runs"

        unhandled = []

        def ctrl_c_after_the_first_result(count: int) -> None:
            if count != 1:
                return
            if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, signal.SIG_DFL, signal.SIG_IGN):
                unhandled.append(True)  # Ctrl-C would end pytest, not the run
            else:
                os.kill(os.getpid(), signal.SIGINT)

        first = Observer("conformance-observer", lambda: RowRecorder(ctrl_c_after_the_first_result))
        pm = self.plugin_manager(first)
        watch = first_watch = BackendLoggers(pm, self.backend_plugin(pm))
        code, _ = self.main(self.smoke_args(storage, {"training_iteration": 3}), pm)
        assert not unhandled, "no Ctrl-C handler while training: the backend does not train through run_training"
        assert first.loggers and first.loggers[0].rows, \
            "no result reached a logger in this process (set trains_here = False if the backend trains elsewhere)"
        assert code == 128 + signal.SIGINT, f"exit {code} for a run stopped by Ctrl-C (expected 130)"
        [run_dir] = [p for p in storage.iterdir() if p.is_dir()]
        seen = first.loggers[0].rows
        assert self.iterations(seen) == list(range(1, len(seen) + 1)) and len(seen) < 3, self.iterations(seen)
        rows = self.standard_files(run_dir, "interrupted")
        assert rows == seen, "metrics.jsonl holds other rows than the run's results"
        self.assert_backend_took(watch, seen)

        again = Observer("conformance-observer", RowRecorder)
        pm = self.plugin_manager(again)
        watch = BackendLoggers(pm, self.backend_plugin(pm))
        code, _ = self.main(["--resume", str(run_dir), *self.extra_args], pm)
        assert code == 0, f"exit {code} for a resumed run that reached its stop criteria"
        assert [p for p in storage.iterdir() if p.is_dir()] == [run_dir], "--resume made a new run directory"
        resumed = again.loggers[0].rows
        rows = self.standard_files(run_dir, "completed")
        assert self.iterations(rows) == [1, 2, 3], "every iteration once in metrics.jsonl"
        assert resumed and rows == [r for r in seen if r["training_iteration"] < resumed[0]["training_iteration"]] \
            + resumed, "metrics.jsonl holds other rows than the two runs' results"
        self.assert_backend_took(watch, resumed, first=first_watch)
        self.check_run(run_dir, rows)

    @pytest.mark.slow
    def test_lost_results_exit_3_and_keep_the_checkpoints(self, tmp_path):
        if not self.trains_here:
            pytest.skip("the backend trains elsewhere")
        storage = tmp_path / "runs"
        recorder = Observer("conformance-observer", RowRecorder)
        pm = self.plugin_manager(recorder, Observer("conformance-failing-observer", FailingLogger))
        watch = BackendLoggers(pm, self.backend_plugin(pm))
        code, err = self.main(self.smoke_args(storage, {"training_iteration": 1}), pm)
        assert code == 3, f"exit {code} for a run whose logger lost results (expected 3)"
        assert "Traceback" not in err
        [run_dir] = [p for p in storage.iterdir() if p.is_dir()]
        rows = self.standard_files(run_dir, "lost-results")
        assert self.iterations(rows) == [1] and rows == recorder.loggers[0].rows
        assert list(run_dir.glob("*/checkpoint_*")), "the checkpoints of a run that lost results are kept"
        self.assert_backend_took(watch, rows)

    @pytest.mark.slow
    def test_launches_through_the_command_line(self, tmp_path):
        if self.trains_here:
            pytest.skip("covered by the real runs")
        code, err = self.main(self.smoke_args(tmp_path / "runs", {"training_iteration": 1}), self.plugin_manager())
        assert code == 0, f"exit {code}"
        assert "Traceback" not in err
