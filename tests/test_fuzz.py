"""Property-based bad input: every command line either resolves to a job or fails with exit 2 and one line."""

from __future__ import annotations

import contextlib
import io
import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pong_train import config as cfg, hookimpl, user_config
from pong_train.cli import main
from pong_train.metrics import STOP_METRICS
from pong_train.plugins import get_plugin_manager

pytestmark = pytest.mark.timeout(300)  # hundreds of in-process command lines, no training

CONFIG_KEYS = [*cfg.TrainConfig.model_fields, *user_config.LEGACY_KEYS, *user_config.REJECTED_KEYS, "model", "framework"]
scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=12), st.lists(st.integers(-5, 300), max_size=4),
)
values = st.recursive(scalars, lambda inner: st.dictionaries(st.sampled_from(["dim", "foo", "conv_filters"]), inner,
                                                             max_size=3), max_leaves=6)
config_dicts = st.dictionaries(st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=15)), values, max_size=5)
stop_dicts = st.dictionaries(st.one_of(st.sampled_from(STOP_METRICS), st.text(max_size=20)), scalars, max_size=3)


def as_json_arg(draw_value, data):
    style = data.draw(st.sampled_from(["json", "quoted", "garbage"]))
    if style == "garbage":
        return data.draw(st.text(max_size=30))
    text = json.dumps(draw_value)
    return f"'{text}'" if style == "quoted" else text


class StopBeforeLaunch:
    """Stands in for the backend: a job that resolved is valid input, nothing trains."""

    @hookimpl(tryfirst=True)
    def pong_train_launch(self, job):
        return 0


def run_in_process(argv: list[str], launcher: object | None = None) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv, plugin_manager=get_plugin_manager(extra_plugins=[launcher or StopBeforeLaunch()]))
    return code, err.getvalue()


def check(argv: list[str], storage: Path, launcher: object | None = None) -> None:
    code, err = run_in_process([*argv, "--storage-path", str(storage)], launcher)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("pong-train: error: "), (argv, err)
    assert not storage.exists(), "input validation created files"


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.data(), config=config_dicts, stop=stop_dicts,
       env=st.one_of(st.sampled_from(["PongNoFrameskip-v4", "ALE/Pong-v5", "BreakoutNoFrameskip-v4"]),
                     st.text(max_size=20)),
       address=st.one_of(st.none(), st.text(max_size=25),
                         st.builds("{}:{}".format, st.sampled_from(["127.0.0.1", "localhost", "", "::1"]),
                                   st.integers(-5, 70000))),
       file_text=st.one_of(st.none(), st.text(string.printable, max_size=80),
                           config_dicts.map(lambda d: json.dumps(d)),
                           st.sampled_from(["1: 2\n", "stop:\n  3: 4\n", "stop: [1]\n", "model: {7: 1}\n",
                                            "lr: 2026-01-01\n", "num_workers: 1\nnum_workers: 2\n"])))
@pytest.mark.slow
def test_any_command_line_resolves_or_fails_with_one_line(data, config, stop, env, address, file_text):
    argv = ["--env", env]
    if data.draw(st.booleans()):
        argv += ["--config", as_json_arg(config, data)]
    if data.draw(st.booleans()):
        argv += ["--stop", as_json_arg(stop, data)]
    if address is not None:
        argv += ["--ray-address", address]
    if data.draw(st.booleans()):
        argv += ["--preset", data.draw(st.sampled_from(["smoke", "article", "nonesuch"]))]
    with tempfile.TemporaryDirectory() as tmp:
        if file_text is not None:
            suffix = data.draw(st.sampled_from([".yaml", ".json", ".yml"]))
            config_file = Path(tmp) / f"train{suffix}"
            config_file.write_text(file_text)
            argv += ["--config-file", str(config_file)]
        check(argv, Path(tmp) / "runs")


BACKEND_VALUES = {
    "--instance-count": st.one_of(st.integers(-3, 10).map(str), st.text(max_size=5)),
    "--vm-size": st.one_of(st.sampled_from(["Standard_NC4as_T4_v3", "STANDARD_D2_V2", "Standard_ND96asr_v4"]),
                           st.text(max_size=20)),
    "--shm-size": st.one_of(st.sampled_from(["8g", "16g", "24g", "1g", "9000m"]), st.text(max_size=6)),
    "--tag": st.text(max_size=12),
    "--env-var": st.sampled_from(["HOME", "PATH", "AZURE_CLIENT_SECRET", "NOT_SET_ANYWHERE_12345"]),
    "--azureml-launch": st.sampled_from(["ray", "mpi", "slurm"]),
    "--azureml-sdk": st.sampled_from(["v1", "v2", "v3"]),
    "--timeout": st.one_of(st.integers(-10, 10**6).map(str), st.text(max_size=5)),
    "--max-instances": st.integers(-1, 8).map(str),
}


class AzureOptionsOnly:
    """Parses the azureml backend's options exactly as its launch hook does, then stops."""

    @hookimpl(tryfirst=True)
    def pong_train_launch(self, job):
        from pong_train_azureml.options import azure_options

        azure_options(job.options)
        return 0


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(options=st.dictionaries(st.sampled_from(sorted(BACKEND_VALUES)), st.none(), max_size=4), data=st.data())
def test_any_backend_option_is_taken_or_refused_with_one_line(options, data):
    argv = ["--backend", "azureml"]
    for flag in options:
        argv += [flag, data.draw(BACKEND_VALUES[flag])]
    err = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        code = main([*argv, "--storage-path", str(Path(tmp) / "runs")],
                    plugin_manager=get_plugin_manager(extra_plugins=[AzureOptionsOnly()]))
        assert not (Path(tmp) / "runs").exists()
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert "Traceback" not in err.getvalue()
    assert code in (0, 2), (argv, code, err.getvalue())
    if code == 2:
        assert len(lines) == 1, (argv, err.getvalue())


class CrashingLaunch:
    """A backend whose launch fails with an unexpected error: exit 1, which `check` must not let through."""

    @hookimpl(tryfirst=True)
    def pong_train_launch(self, job):
        raise RuntimeError("unexpected")


class WritingLaunch:
    """A backend that writes into the storage path: `check` must notice files left behind."""

    @hookimpl(tryfirst=True)
    def pong_train_launch(self, job):
        job.storage_path.mkdir(parents=True)
        return 0


def test_the_harness_tells_bad_input_from_every_other_way_out(tmp_path):
    # Known-bad input takes the exit-2 path with one line, good input resolves: check() passes both.
    code, err = run_in_process(["--config", "{", "--storage-path", str(tmp_path / "r")])
    assert code == 2 and err.startswith("pong-train: error: --config") and err.count("\n") == 1, err
    assert run_in_process(["--preset", "smoke", "--storage-path", str(tmp_path / "r")]) == (0, "")
    check(["--config", "{"], tmp_path / "r")
    check(["--preset", "smoke"], tmp_path / "r")
    # And it fails what the property forbids: another exit code, files left behind.
    with pytest.raises(AssertionError):
        check(["--preset", "smoke"], tmp_path / "r", CrashingLaunch())
    with pytest.raises(AssertionError, match="input validation created files"):
        check(["--preset", "smoke"], tmp_path / "r", WritingLaunch())
