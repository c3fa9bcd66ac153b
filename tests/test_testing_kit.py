"""The conformance suite itself (`pong_train.testing`): a pytest plugin, the docs' example, and a suite that
fails a backend breaking its contract. That every shipped backend passes it is tests/test_conformance.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET

import pytest

from helpers import REPO
from pong_train import hookimpl
from pong_train.job import Backend, Invocation, Job, ResultLogger, Run
from pong_train.plugins import get_plugin_manager
from pong_train.testing.recorders import BackendLoggers, Observer, RowRecorder

EXAMPLE = REPO / "examples" / "pong-train-example-backend"


def test_the_docs_show_the_example_backend_verbatim():
    docs = (REPO / "docs" / "plugins.md").read_text()
    section = docs.split("\n## A complete backend", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert code == (EXAMPLE / "pong_train_example_backend" / "__init__.py").read_text()


def test_the_suite_is_declared_a_pytest_plugin():
    # That the installed entry point works in a project of its own: test_the_suite_fails_a_backend_... below.
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["pytest11"] == {"pong_train": "pong_train.testing"}


class WrongLogger(ResultLogger):
    def log_result(self, row):
        row["episode_reward_mean"] = 21.0  # every logger shares the row: changing it is a bug


class Hands:
    """A backend plugin registered by hand, with a logger for its runs."""

    __name__ = "hands"

    @hookimpl
    def pong_train_backends(self):
        return [Backend("hands", "registered by hand")]

    @hookimpl
    def pong_train_result_loggers(self, run):
        return [WrongLogger()] if run.job.backend == "hands" else []


def test_the_backends_loggers_are_watched_through_the_core_calls(tmp_path):
    observer = Observer("observer", RowRecorder)
    pm = get_plugin_manager(extra_plugins=[Hands(), observer])
    watch = BackendLoggers(pm, "hands")
    run = Run(job=Job(backend="hands"), run_dir=tmp_path, invocation=Invocation(plugin_manager=pm))
    loggers = [logger for _, found in pm.results("pong_train_result_loggers", run=run) for logger in found]
    [recorded] = watch.loggers
    assert recorded in loggers and observer.loggers[0] in loggers and watch.calls == 1
    assert type(recorded).__name__ == "WrongLogger"  # the core's warnings name the backend's own class
    recorded.log_result({"training_iteration": 1, "episode_reward_mean": None})
    assert recorded.rows == [{"training_iteration": 1, "episode_reward_mean": None}]
    assert recorded.changed_rows == 1


SLOPPY = '''
"""A backend that breaks its contract in every way the fast checks can see."""
from typing import Annotated

from pydantic import BaseModel

from pong_train import hookimpl
from pong_train.job import Backend, ResultLogger
from pong_train.plugin_options import Flag


class SloppyOptions(BaseModel):
    level: Annotated[int, Flag("--sloppy-level")] = 1  # no docstring: no help text


@hookimpl
def pong_train_backends():
    return [Backend("sloppy", "takes every job")]


@hookimpl
def pong_train_cli_options():
    return [SloppyOptions]


@hookimpl
def pong_train_launch(job):
    return 0  # every backend's job, and without training


@hookimpl
def pong_train_result_loggers(run):
    return [ResultLogger()]  # for every run
'''

MISSPELT = '''
from pong_train import hookimpl


@hookimpl
def pong_train_result_logger(run):  # not a hook: the plugin is set aside
    return []
'''

INNER_TESTS = '''
import pytest

from pong_train.testing import BackendConformance


class TestSloppy(BackendConformance):
    backend = "sloppy"


@pytest.mark.slow
def test_the_slow_mark_is_known():
    pass
'''

SLOPPY_FAILS = {
    "test_its_plugins_load_and_fit_the_hooks",
    "test_launch_leaves_other_backends_jobs_alone",
    "test_result_loggers_only_for_its_own_runs",
    "test_options_fit_the_command_line",
    "test_an_unusable_storage_path_is_bad_input",
}


@pytest.mark.slow
def test_the_suite_fails_a_backend_that_breaks_its_contract(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "pong_train_sloppy.py").write_text(SLOPPY)
    (site / "pong_train_sloppy_misspelt.py").write_text(MISSPELT)
    dist_info = site / "pong_train_sloppy-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pong-train-sloppy\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[pong_train]\nsloppy = pong_train_sloppy\nsloppy-extra = pong_train_sloppy_misspelt\n")
    project = tmp_path / "project"  # a third-party project: no pytest configuration of its own
    project.mkdir()
    (project / "test_sloppy.py").write_text(INNER_TESTS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not slow", "--strict-markers",
         "-W", "error::pytest.PytestUnknownMarkWarning", "--junitxml", str(tmp_path / "out.xml"), "test_sloppy.py"],
        cwd=project, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]  # tests failed; no usage error
    outcomes = {}
    for case in ET.parse(tmp_path / "out.xml").iter("testcase"):
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        outcomes[(case.get("classname").rsplit(".", 1)[-1], case.get("name"))] = kind
    failed = {name for (cls, name), kind in outcomes.items() if cls == "TestSloppy" and kind in ("failure", "error")}
    assert failed == SLOPPY_FAILS, proc.stdout[-5000:]
    passed = {name for (cls, name), kind in outcomes.items() if cls == "TestSloppy" and kind == "passed"}
    assert passed == {"test_declared_once_with_a_one_line_description", "test_listed_with_version_and_distribution",
                      "test_bad_input_is_one_line_exit_2_and_leaves_nothing"}, outcomes
    assert "pong-train-sloppy 1.0 (sloppy-extra)" in proc.stdout  # the broken plugin is named


class RowsKept(ResultLogger):
    """A backend's own logger: what it keeps is what the suite compares with metrics.jsonl."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def log_result(self, row):
        self.rows.append(dict(row))


class OldDocsBackend:
    """A backend written to the previous release's docs: `pong_train_launch(job)` returning `run_training(job)`."""

    __name__ = "old-docs"

    @hookimpl
    def pong_train_backends(self):
        return [Backend("old-docs", "trains here, written to the previous docs")]

    @hookimpl
    def pong_train_launch(self, job):
        if job.backend != "old-docs":
            return None
        from pong_train.training import run_training

        return run_training(job)

    @hookimpl
    def pong_train_result_loggers(self, run):
        return [RowsKept()] if run.job.backend == "old-docs" else []


class ForgetsResumedRuns(OldDocsBackend):
    """A backend whose logger misses rows: it hands out none for a resumed run."""

    __name__ = "forgetful"

    @hookimpl
    def pong_train_backends(self):
        return [Backend("forgetful", "loses a resumed run's rows")]

    @hookimpl
    def pong_train_launch(self, job, invocation):
        if job.backend != "forgetful":
            return None
        from pong_train.training import run_training

        return run_training(job, invocation)

    @hookimpl
    def pong_train_result_loggers(self, run):
        return [RowsKept()] if run.job.backend == "forgetful" and run.invocation.resume_dir is None else []


def suite_for(plugin: object, name: str):
    from pong_train.testing import BackendConformance

    class Suite(BackendConformance):
        backend = name

        def plugin_manager(self, *extra_plugins: object):
            return get_plugin_manager(extra_plugins=[plugin, *extra_plugins])

    return Suite()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_backend_written_to_the_previous_docs_gets_every_row_in_its_own_logger(tmp_path):
    """`run_training(job)` with no invocation runs the plugins' loggers: the suite's interrupted and resumed run
    checks that the backend's logger took exactly the rows metrics.jsonl holds, both times."""
    suite_for(OldDocsBackend(), "old-docs").test_interrupted_run_resumes_with_every_result_once(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_suite_fails_a_backend_whose_logger_misses_rows(tmp_path):
    with pytest.raises(AssertionError, match=r"took none of the \d+ rows metrics.jsonl holds for the resumed run"):
        suite_for(ForgetsResumedRuns(), "forgetful").test_interrupted_run_resumes_with_every_result_once(tmp_path)


def test_an_invocation_without_plugins_gets_the_commands_and_says_so(capsys):
    from pong_train.plugins import LAUNCHING, with_plugins

    pm = get_plugin_manager()
    token = LAUNCHING.set(Invocation(plugin_manager=pm, quiet=True))
    try:
        assert with_plugins(None).plugin_manager is pm and with_plugins(None).quiet
        given = with_plugins(Invocation(debug=True))
        assert given.plugin_manager is pm and given.debug and not given.quiet
    finally:
        LAUNCHING.reset(token)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without a plugin manager" in err and "pass on the invocation" in err
    assert with_plugins(None).plugin_manager is not None  # outside any command: the installed plugins
