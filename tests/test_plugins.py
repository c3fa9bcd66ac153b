"""Plugins: a third-party backend installed through the entry-point group, hook docs, the registry, and
plugins that do not fit or fail: set aside and named, never fatal to the command line."""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import json
import shutil
import sys
from pathlib import Path

import click
import pytest

from helpers import REPO, options_model, run_cli, run_dirs
from pong_train import __version__, hookimpl, hookspecs
from pong_train.cli import main
from pong_train.errors import PluginError, UsageError
from pong_train.job import Backend, Invocation, Job, ResultLogger, Run
from pong_train.loggers import ConsoleLogger, JsonlLogger, read_metrics
from pong_train.plugins import get_plugin_manager

pytestmark = pytest.mark.timeout(120)  # all but the slow run: no training

EXAMPLE = REPO / "examples" / "pong-train-example-backend"


@pytest.fixture
def third_party_site(tmp_path: Path) -> Path:
    """The example backend (examples/pong-train-example-backend) installed as pip would leave it, under a
    version of its own: its package plus a dist-info with the entry point."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "pong_train_example_backend", site / "pong_train_example_backend")
    dist_info = site / "pong_train_example_backend-9.9.9.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pong-train-example-backend\nVersion: 9.9.9\n")
    (dist_info / "entry_points.txt").write_text("[pong_train]\nexample = pong_train_example_backend\n")
    return site


def with_site(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{site}:{REPO}"}


def run_main(argv: list[str], pm) -> tuple[int, str, str]:
    """`pong-train ARGV` in this process with plugin manager `pm`: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv, plugin_manager=pm)
    return code, out.getvalue(), err.getvalue()


def listed(stdout: str) -> dict[str, str]:
    """`pong-train backends` output: first word of each row -> the whole row (a broken plugin keeps its own row)."""
    rows: dict[str, str] = {}
    for line in stdout.splitlines()[1:]:
        name = line.split()[0]
        rows[name + (" (broken)" if "BROKEN:" in line else "")] = line
    return rows


# -- a third-party backend, installed --------------------------------------------------------------


def test_backends_lists_builtin_and_third_party_with_version_and_distribution(third_party_site):
    proc = run_cli("backends", env=with_site(third_party_site))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert lines["local"][1:3] == [__version__, "pong-train"]
    assert lines["example"][1:3] == ["9.9.9", "pong-train-example-backend"]
    assert " ".join(lines["example"][3:]) == "this machine, like local, plus a CSV file of results in the run directory"


def test_plugin_options_and_subcommands_show_in_help_and_refuse_bad_input(third_party_site):
    proc = run_cli("--help", env=with_site(third_party_site))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "[example] Name of the CSV file the example backend writes in the run directory." in " ".join(
        proc.stdout.split())
    assert "example-results" in proc.stdout
    # The plugin's model refuses a value: one line naming the flag, exit 2.
    proc = run_cli("--backend", "example", "--example-csv", "../out.csv", env=with_site(third_party_site))
    assert proc.returncode == 2 and proc.stderr.startswith("pong-train: error: --example-csv: ") and \
        proc.stderr.count("\n") == 1, proc.stderr
    proc = run_cli("example-results", str(REPO), env=with_site(third_party_site))
    assert proc.returncode == 2 and "cannot read the job file" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_example_backend_trains_with_its_option_and_the_cores_outputs(third_party_site, storage):
    """One run through the installed example: its option reaches its logger (the CSV's name), its CSV holds every
    result in order, its subcommand reads it back, and the core adds its own outputs (console line,
    metrics.jsonl) to this backend's run."""
    proc = run_cli("--backend", "example", "--example-csv", "mine.csv", "--preset", "smoke", "--stop",
                   '{"training_iteration": 4}', "--storage-path", str(storage), env=with_site(third_party_site),
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    with open(run_dir / "mine.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["training_iteration"]) for r in rows] == [1, 2, 3, 4]
    # The core's loggers run for any backend: metrics.jsonl and a console line per result.
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [row["training_iteration"] for row in metrics] == [1, 2, 3, 4]
    assert [float(r["timesteps_total"]) for r in rows] == [row["timesteps_total"] for row in metrics]
    assert len([line for line in proc.stdout.splitlines() if line.startswith("iter ")]) == 4
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["backend"], record["status"]) == ("example", "completed")
    assert Job.load(run_dir / "job.json").options["example"] == {"csv_name": "mine.csv"}  # under its name
    shown = run_cli("example-results", str(run_dir), env=with_site(third_party_site))
    assert shown.returncode == 0 and shown.stdout.startswith("training_iteration 4, "), shown.stderr


@pytest.mark.parametrize("backend", ["local", "azureml", "example"])
def test_the_core_adds_its_loggers_to_every_run_whatever_the_backend(backend, tmp_path):
    from pong_train.monitor import RunMonitor, close_loggers, core_loggers

    run = Run(job=Job(backend=backend, storage_path=tmp_path, stop={"training_iteration": 9}), run_dir=tmp_path)
    assert [type(logger) for logger in core_loggers(run)] == [ConsoleLogger, JsonlLogger]
    quiet = Run(job=run.job, run_dir=tmp_path, invocation=Invocation(quiet=True))
    assert [type(logger) for logger in core_loggers(quiet)] == [JsonlLogger]
    # Beside a plugin's logger, every result reaches metrics.jsonl as well.
    taken = []

    class Taker(ResultLogger):
        def log_result(self, row):
            taken.append(row["training_iteration"])

    monitor = RunMonitor(quiet, lambda each: [("plugin someone", Taker())])
    for iteration in (1, 2):
        monitor.on_result("trial", {"training_iteration": iteration, "time_total_s": 1.0 * iteration})
    assert close_loggers(tmp_path) == {}
    assert taken == [1, 2]
    assert [row["training_iteration"] for row in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_the_local_backend_is_registered_through_the_entry_point_group():
    pm = get_plugin_manager()
    assert pm.backends()["local"][1] == "local"
    assert pm.distribution("local") == ("pong-train", __version__)
    assert pm.get_plugin("local").__name__ == "pong_train_local"
    assert pm.label("local") == f"plugin pong-train {__version__} (local)"
    # The local backend hands out no loggers of its own: the core's console line and metrics.jsonl are everyone's.
    assert "local" not in [impl.plugin_name for impl in pm.impls("pong_train_result_loggers")]


def test_a_backend_name_declared_twice_is_an_error():
    class Twin:
        __name__ = "twin"

        @hookimpl
        def pong_train_backends(self):
            return [Backend("local", "a second local")]

    with pytest.raises(UsageError, match="backend 'local' is declared by two plugins: ") as raised:
        get_plugin_manager(extra_plugins=[Twin()]).backends()
    assert f"plugin pong-train {__version__} (local)" in str(raised.value) and "plugin twin" in str(raised.value)
    code, _, err = run_main(["backends"], get_plugin_manager(extra_plugins=[Twin()]))
    assert code == 2 and err.count("\n") == 1 and "declared by two plugins" in err, err


# -- plugins that do not fit the hook specs: set aside, listed, never fatal -------------------------


class MisspeltHook:
    """An observer whose logger hook is misspelt: `pong_train_result_logger`."""

    __name__ = "misspelt-observer"

    @hookimpl
    def pong_train_backends(self):
        return [Backend("misspelt", "never offered: the plugin is set aside")]

    @hookimpl
    def pong_train_result_logger(self, run):
        return []


MISSPELT_PROBLEM = "defines unknown hook pong_train_result_logger; did you mean pong_train_result_loggers?"


def test_a_misspelt_hook_sets_the_plugin_aside_naming_the_hook_it_meant():
    pm = get_plugin_manager(extra_plugins=[MisspeltHook()])
    [broken] = pm.broken
    assert (broken.name, broken.dist, broken.version, broken.problem) == ("misspelt-observer", "-", "-",
                                                                          MISSPELT_PROBLEM)
    assert broken.label == "plugin misspelt-observer"
    assert pm.get_plugin("misspelt-observer") is None  # none of its hooks is called, the good ones neither
    assert "misspelt" not in pm.backends() and "local" in pm.backends()


def test_pong_train_backends_lists_a_broken_plugin_and_exits_0():
    code, out, err = run_main(["backends"], get_plugin_manager(extra_plugins=[MisspeltHook()]))
    assert code == 0 and err == "", err
    rows = listed(out)
    assert rows["misspelt-observer (broken)"].split() == ["misspelt-observer", "-", "-", "BROKEN:",
                                                          *MISSPELT_PROBLEM.split()]
    assert "misspelt" not in rows and "local" in rows


def test_help_still_works_beside_a_broken_plugin_with_a_one_line_warning():
    code, out, err = run_main(["--help"], get_plugin_manager(extra_plugins=[MisspeltHook()]))
    assert code == 0 and "Usage: pong-train" in out
    assert err.splitlines() == [f"pong-train: warning: plugin misspelt-observer is not loaded: {MISSPELT_PROBLEM}"]


def test_a_hook_without_hookimpl_is_reported():
    class Undecorated:
        __name__ = "undecorated"

        def pong_train_launch(self, job):  # no @hookimpl: pluggy would silently never call it
            return 0

    pm = get_plugin_manager(extra_plugins=[Undecorated()])
    [broken] = pm.broken
    assert broken.name == "undecorated"
    assert broken.problem == "defines pong_train_launch without @hookimpl, so pong-train would never call it"
    code, _, err = run_main(["--help"], pm)
    assert code == 0 and err.splitlines() == [f"pong-train: warning: plugin undecorated is not loaded: {broken.problem}"]


def test_a_hook_with_arguments_the_spec_lacks_is_set_aside():
    class WrongArguments:
        __name__ = "wrong-arguments"

        @hookimpl
        def pong_train_launch(self, jobb):
            return None

    pm = get_plugin_manager(extra_plugins=[WrongArguments()])
    [broken] = pm.broken
    assert broken.name == "wrong-arguments" and "pong_train_launch" in broken.problem
    assert pm.get_plugin("wrong-arguments") is None
    assert run_main(["backends"], pm)[0] == 0


def test_a_hook_with_arguments_the_spec_lacks_is_reported_with_the_reason():
    class WrongArguments:
        __name__ = "wrong-arguments"

        @hookimpl
        def pong_train_launch(self, jobb):
            return None

    [broken] = get_plugin_manager(extra_plugins=[WrongArguments()]).broken
    assert "jobb" in broken.problem


# -- plugins whose hooks fail -----------------------------------------------------------------------


class Exploding:
    """A backend whose launch fails at once."""

    __name__ = "exploding"

    @hookimpl
    def pong_train_backends(self):
        return [Backend("exploding", "fails as soon as it launches")]

    @hookimpl
    def pong_train_launch(self, job):
        if job.backend == "exploding":
            raise RuntimeError("boom")
        return None


def test_a_failing_launch_is_one_line_naming_the_plugin_and_the_hook(storage):
    code, _, err = run_main(["--preset", "smoke", "--storage-path", str(storage), "--backend", "exploding"],
                            get_plugin_manager(extra_plugins=[Exploding()]))
    assert code == 1, err
    assert err.splitlines() == ["pong-train: error: plugin exploding: hook pong_train_launch failed: RuntimeError: boom"]
    assert not storage.exists()


def test_a_failing_launch_shows_its_traceback_with_debug(storage):
    code, _, err = run_main(["--preset", "smoke", "--storage-path", str(storage), "--backend", "exploding", "--debug"],
                            get_plugin_manager(extra_plugins=[Exploding()]))
    assert code == 1
    assert "Traceback" in err and 'raise RuntimeError("boom")' in err  # the plugin's own line
    assert err.splitlines()[-1] == "pong-train: error: plugin exploding: hook pong_train_launch failed: RuntimeError: boom"


def test_a_failing_launch_of_another_backend_is_not_reached(storage):
    """pluggy stops at the first non-None answer: the exploding plugin answers None for other backends."""
    class Capture:
        @hookimpl(tryfirst=True)
        def pong_train_launch(self, job):
            return 0 if job.backend == "local" else None

    code, _, err = run_main(["--preset", "smoke", "--storage-path", str(storage)],
                            get_plugin_manager(extra_plugins=[Exploding(), Capture()]))
    assert code == 0, err


class NoBackends:
    """A plugin whose backends hook fails: set aside, its other hooks never called."""

    __name__ = "no-backends"

    @hookimpl
    def pong_train_backends(self):
        raise ValueError("cannot read my settings")

    @hookimpl
    def pong_train_cli_options(self):
        return [options_model("--no-backends-flag", False, "Never offered.")]


def test_a_failing_backends_hook_sets_the_plugin_aside_not_fatal():
    pm = get_plugin_manager(extra_plugins=[NoBackends()])
    assert "local" in pm.backends()  # no exception: the other plugins' backends are all there
    [broken] = pm.broken
    assert (broken.name, broken.problem) == ("no-backends", "hook pong_train_backends failed: ValueError: "
                                                             "cannot read my settings")
    assert pm.get_plugin("no-backends") is None
    code, out, err = run_main(["backends"], get_plugin_manager(extra_plugins=[NoBackends()]))
    assert code == 0 and err == ""
    assert "BROKEN: hook pong_train_backends failed: ValueError: cannot read my settings" in listed(out)[
        "no-backends (broken)"]
    code, out, err = run_main(["--help"], get_plugin_manager(extra_plugins=[NoBackends()]))
    assert code == 0 and "--no-backends-flag" not in out
    assert err.splitlines() == ["pong-train: warning: plugin no-backends is not loaded: hook pong_train_backends "
                                "failed: ValueError: cannot read my settings"]


class HalfBroken:
    """Declares a backend, then fails to add its options: set aside, so its backend must not be offered."""

    __name__ = "half-broken"

    @hookimpl
    def pong_train_backends(self):
        return [Backend("half", "set aside when its options fail")]

    @hookimpl
    def pong_train_cli_options(self):
        raise ValueError("no options today")

    @hookimpl
    def pong_train_launch(self, job):
        return 0 if job.backend == "half" else None


def test_a_failing_options_hook_sets_the_plugin_aside():
    code, out, err = run_main(["--help"], get_plugin_manager(extra_plugins=[HalfBroken()]))
    assert code == 0 and "Usage: pong-train" in out
    assert err.splitlines() == ["pong-train: warning: plugin half-broken is not loaded: hook pong_train_cli_options "
                                "failed: ValueError: no options today"]


def test_the_backend_of_a_plugin_set_aside_for_its_options_is_not_offered():
    code, out, _ = run_main(["backends"], get_plugin_manager(extra_plugins=[HalfBroken()]))
    assert code == 0 and "half" not in listed(out)


def test_a_backends_hook_returning_the_wrong_type_sets_the_plugin_aside():
    class NotAList:
        __name__ = "not-a-list"

        @hookimpl
        def pong_train_backends(self):
            return Backend("lonely", "not inside a list")

    code, _, err = run_main(["backends"], get_plugin_manager(extra_plugins=[NotAList()]))
    assert code == 0, err


def test_a_failing_result_loggers_hook_names_the_plugin_and_leaves_no_run_directory(tmp_path):
    from pong_train.training import plugin_loggers

    class NoLoggers:
        __name__ = "no-loggers"

        @hookimpl
        def pong_train_result_loggers(self, run):
            raise KeyError("tracking_uri")

    pm = get_plugin_manager(extra_plugins=[NoLoggers()])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = Run(job=Job(backend="local", storage_path=tmp_path), run_dir=run_dir, invocation=Invocation(plugin_manager=pm))
    with pytest.raises(PluginError, match=r"^plugin no-loggers: hook pong_train_result_loggers failed: "
                                          r"KeyError: 'tracking_uri'$"):
        plugin_loggers(run)
    assert not run_dir.exists()


# -- broken plugins installed as distributions: named with their distribution and version ------------

BROKEN_MODULE = '''
from pong_train import hookimpl
from pong_train.job import Backend


@hookimpl
def pong_train_backends():
    return [Backend("fine", "a backend of a plugin that is set aside")]


@hookimpl
def pong_train_result_logger(run):  # misspelt
    return []
'''


@pytest.fixture
def broken_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution with a plugin that misspells a hook and one that cannot be imported, on sys.path."""
    site = tmp_path / "broken-site"
    site.mkdir()
    (site / "pong_train_broken_example.py").write_text(BROKEN_MODULE)
    dist_info = site / "pong_train_broken_example-0.3.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pong-train-broken-example\nVersion: 0.3.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[pong_train]\nbroken = pong_train_broken_example\nunimportable = pong_train_no_such_module\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("pong_train_broken_example", None)


def test_a_broken_installed_plugin_is_named_with_its_distribution_and_version(broken_site):
    pm = get_plugin_manager()
    broken = {b.name: b for b in pm.broken}
    assert broken["broken"].label == "plugin pong-train-broken-example 0.3.1 (broken)"
    assert broken["broken"].problem == MISSPELT_PROBLEM
    assert broken["unimportable"].label == "plugin pong-train-broken-example 0.3.1 (unimportable)"
    assert broken["unimportable"].problem.startswith("cannot be imported (ModuleNotFoundError: ")
    assert "fine" not in pm.backends() and "local" in pm.backends()
    code, out, err = run_main(["backends"], get_plugin_manager())
    assert code == 0 and err == ""
    rows = listed(out)
    assert rows["broken (broken)"].split()[:4] == ["broken", "0.3.1", "pong-train-broken-example", "BROKEN:"]
    assert "unimportable (broken)" in rows and "fine" not in rows
    code, out, err = run_main(["--help"], get_plugin_manager())
    assert code == 0 and "Usage: pong-train" in out
    assert err.splitlines() == [
        f"pong-train: warning: plugin pong-train-broken-example 0.3.1 (broken) is not loaded: {MISSPELT_PROBLEM}",
        "pong-train: warning: plugin pong-train-broken-example 0.3.1 (unimportable) is not loaded: cannot be "
        "imported (ModuleNotFoundError: No module named 'pong_train_no_such_module')",
    ]


# -- the hooks: documented, and each one called by the core where the docs say ------------------------

HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("pong_train_")]


def test_the_hook_list_is_the_five_documented_hooks():
    assert sorted(HOOKS) == sorted(["pong_train_backends", "pong_train_cli_options", "pong_train_cli_commands",
                                    "pong_train_launch", "pong_train_result_loggers"])


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    for part in ("When:", "Process:", ":return:"):
        assert part in doc, f"{hook} docstring lacks {part!r}"
    assert ("first non-None result" in doc) == bool(getattr(hookspecs, hook).pong_train_spec.get("firstresult"))
    assert hook in (REPO / "README.md").read_text(), f"{hook} is not in the README"
    assert f"### `{hook}(" in (REPO / "docs" / "plugins.md").read_text(), f"{hook} has no section in docs/plugins.md"


class Recorder:
    """Implements every hook and records each call the core makes, with its arguments."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.logger = ResultLogger()

    @hookimpl
    def pong_train_backends(self):
        self.calls.append(("pong_train_backends", {}))
        return [Backend("recorded", "records the calls")]

    @hookimpl
    def pong_train_cli_options(self):
        self.calls.append(("pong_train_cli_options", {}))
        return [options_model("--recorder-note", "none", "A note for the recorder.")]

    @hookimpl
    def pong_train_cli_commands(self):
        self.calls.append(("pong_train_cli_commands", {}))
        return [click.Command("recorder-hello", callback=lambda: click.echo("hello"))]

    @hookimpl
    def pong_train_launch(self, job, invocation):
        self.calls.append(("pong_train_launch", {"job": job, "invocation": invocation}))
        return 0 if job.backend == "recorded" else None

    @hookimpl
    def pong_train_result_loggers(self, run):
        self.calls.append(("pong_train_result_loggers", {"run": run}))
        return [self.logger]


def drive_help(recorder: Recorder, tmp_path: Path) -> None:
    code, out, _ = run_main(["--help"], get_plugin_manager(extra_plugins=[recorder]))
    assert code == 0 and "--recorder-note" in out and "recorder-hello" in out and "recorded" in out


def drive_launch(recorder: Recorder, tmp_path: Path) -> None:
    code, _, err = run_main(["--backend", "recorded", "--recorder-note", "hi", "--preset", "smoke",
                             "--storage-path", str(tmp_path / "runs")], get_plugin_manager(extra_plugins=[recorder]))
    assert code == 0, err
    [(job, invocation)] = [(kwargs["job"], kwargs["invocation"]) for hook, kwargs in recorder.calls
                           if hook == "pong_train_launch"]
    assert job.backend == "recorded" and job.options["recorder"]["recorder_note"] == "hi" and invocation.plugin_manager is not None


def drive_result_loggers(recorder: Recorder, tmp_path: Path) -> None:
    from pong_train.training import plugin_loggers

    pm = get_plugin_manager(extra_plugins=[recorder])
    run = Run(job=Job(backend="local", storage_path=tmp_path), run_dir=tmp_path, invocation=Invocation(plugin_manager=pm))
    assert ("plugin recorder", recorder.logger) in plugin_loggers(run)
    [called_with] = [kwargs["run"] for hook, kwargs in recorder.calls if hook == "pong_train_result_loggers"]
    assert called_with is run


# How a test makes the core call each hook (a new hook needs an entry here).
DRIVERS = {"pong_train_backends": drive_help, "pong_train_cli_options": drive_help,
           "pong_train_cli_commands": drive_help, "pong_train_launch": drive_launch,
           "pong_train_result_loggers": drive_result_loggers}


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_called_by_the_core(hook, tmp_path):
    assert hook in DRIVERS, f"no test makes the core call {hook}"
    recorder = Recorder()
    DRIVERS[hook](recorder, tmp_path)
    assert [name for name, _ in recorder.calls].count(hook) == 1, recorder.calls
