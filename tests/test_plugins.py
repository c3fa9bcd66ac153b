"""Plugins: a third-party backend installed through the entry-point group, hook docs, and the registry."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from conftest import REPO, run_cli, run_dirs
from pong_train import hookimpl, hookspecs
from pong_train.errors import UsageError
from pong_train.job import Backend
from pong_train.plugins import backends, get_plugin_manager

THIRD_PARTY_MODULE = '''
"""A third-party backend: trains here like 'local', but logs each result to its own file."""
import json
import os

import click

from pong_train import hookimpl
from pong_train.job import Backend, ResultLogger


class TaggedLogger(ResultLogger):
    def __init__(self, path, tag):
        self.path, self.tag = path, tag
        self.fail_first = int(os.environ.get("THIRDPARTY_FAIL_FIRST", "0"))

    def log_result(self, row):
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionError("tracking server unreachable")
        with open(self.path, "a") as out:
            out.write(json.dumps({"tag": self.tag, "iteration": row["training_iteration"],
                                  "episode_reward_mean": row["episode_reward_mean"]}) + "\\n")


@hookimpl
def pong_train_backends():
    return [Backend("thirdparty", "an example backend from another distribution")]


@hookimpl
def pong_train_cli_options():
    return [click.Option(["--thirdparty-tag"], default="none", help="Tag written beside each result.")]


@hookimpl
def pong_train_cli_commands():
    @click.command("thirdparty-hello")
    def hello():
        """Say hello from the example plugin."""
        click.echo("hello from thirdparty")
    return [hello]


@hookimpl
def pong_train_launch(job):
    if job.backend != "thirdparty":
        return None
    from pong_train.training import run_training
    return run_training(job)


@hookimpl
def pong_train_result_loggers(run):
    if run.job.backend != "thirdparty":
        return []
    return [TaggedLogger(run.run_dir / "thirdparty.jsonl", run.job.options["thirdparty_tag"])]
'''


@pytest.fixture
def third_party_site(tmp_path: Path) -> Path:
    """An installed distribution, as pip would leave it: module plus dist-info with the entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "pong_train_thirdparty.py").write_text(THIRD_PARTY_MODULE)
    dist_info = site / "pong_train_thirdparty_example-9.9.9.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pong-train-thirdparty-example\nVersion: 9.9.9\n")
    (dist_info / "entry_points.txt").write_text("[pong_train]\nthirdparty = pong_train_thirdparty\n")
    return site


def with_site(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{site}:{REPO}"}


def test_backends_lists_builtin_and_third_party_with_version_and_distribution(third_party_site):
    proc = run_cli("backends", env=with_site(third_party_site))
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert lines["local"][1:3] == [__import__("pong_train").__version__, "pong-train"]
    assert lines["thirdparty"][1:3] == ["9.9.9", "pong-train-thirdparty-example"]


def test_plugin_options_and_subcommands_show_in_help_and_run(third_party_site):
    proc = run_cli("--help", env=with_site(third_party_site))
    assert "--thirdparty-tag" in proc.stdout and "thirdparty-hello" in proc.stdout
    proc = run_cli("thirdparty-hello", env=with_site(third_party_site))
    assert proc.returncode == 0 and proc.stdout.strip() == "hello from thirdparty"


@pytest.mark.slow
def test_third_party_backend_trains_and_decides_where_metrics_go(third_party_site, storage):
    proc = run_cli("--backend", "thirdparty", "--thirdparty-tag", "hello", "--preset", "smoke", "--stop",
                   '{"training_iteration": 2}', "--storage-path", str(storage), env=with_site(third_party_site),
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    rows = [json.loads(line) for line in (run_dir / "thirdparty.jsonl").read_text().splitlines()]
    assert [(r["tag"], r["iteration"]) for r in rows] == [("hello", 1), ("hello", 2)]
    # The local backend's loggers stay out of another backend's run.
    assert not (run_dir / "metrics.jsonl").exists()
    assert json.loads((run_dir / "run.json").read_text())["backend"] == "thirdparty"


@pytest.mark.slow
def test_a_failing_logger_never_stops_training_and_loses_nothing(third_party_site, storage):
    proc = run_cli("--backend", "thirdparty", "--preset", "smoke", "--stop", '{"training_iteration": 4}',
                   "--storage-path", str(storage), env={**with_site(third_party_site), "THIRDPARTY_FAIL_FIRST": "2"},
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("metric logger TaggedLogger failed (ConnectionError") == 1
    [run_dir] = run_dirs(storage)
    rows = [json.loads(line) for line in (run_dir / "thirdparty.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]  # delivered late, in order, none lost


def test_the_local_backend_is_registered_through_the_entry_point_group():
    pm = get_plugin_manager()
    assert "local" in backends(pm)
    [(plugin, dist)] = [(p, d) for p, d in pm.list_plugin_distinfo() if p.__name__ == "pong_train_local"]
    assert dist.project_name == "pong-train"


def test_a_backend_name_declared_twice_is_an_error():
    class Twin:
        @hookimpl
        def pong_train_backends(self):
            return [Backend("local", "a second local")]

    with pytest.raises(UsageError, match="declared by two plugins"):
        backends(get_plugin_manager(extra_plugins=[Twin()]))


def test_a_misspelt_hook_is_an_error_not_silence():
    class Misspelt:
        @hookimpl
        def pong_train_lanch(self, job):
            return 0

    with pytest.raises(Exception, match="pong_train_lanch"):
        get_plugin_manager(extra_plugins=[Misspelt()])


HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("pong_train_")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    for part in ("When:", "Process:", ":return:"):
        assert part in doc, f"{hook} docstring lacks {part!r}"
    assert ("first non-None result" in doc) == bool(getattr(hookspecs, hook).pong_train_spec.get("firstresult"))
    assert hook in (REPO / "README.md").read_text(), f"{hook} is not in the README"
    assert f"### `{hook}(" in (REPO / "docs" / "plugins.md").read_text(), f"{hook} has no section in docs/plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook):
    this_file = Path(__file__).resolve()
    sources = [p.read_text() for p in (REPO / "tests").glob("test_*.py") if p.resolve() != this_file]
    sources.append(THIRD_PARTY_MODULE)
    assert any(hook in source for source in sources), f"no test implements or calls {hook}"
