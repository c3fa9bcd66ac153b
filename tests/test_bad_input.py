"""Bad input through the real command line: one line on stderr, exit 2, no traceback, nothing written."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_cli

pytestmark = pytest.mark.timeout(180)  # a few `pong-train` processes each, refused before Ray starts

ARTICLE_CONFIG = '{"num_gpus": 1, "num_workers": 13}'
ARTICLE_STOP = '{"episode_reward_mean": 18, "time_total_s": 3600}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def no_gpu() -> None:
    import torch

    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU: the article's command line would train")


def assert_refused_for_want_of_a_gpu(proc) -> None:
    """Exit 2, no traceback, and the error line (after the translated keys' notes) says how to fix it."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("pong-train: error: "), proc.stderr
    assert "GPU" in lines[0] and '"num_gpus": 0' in lines[0], lines[0]


@pytest.mark.slow
def test_article_command_line_is_refused_at_once_for_want_of_a_gpu(storage, no_gpu):
    proc = run_cli("--run", "IMPALA", "--env", "PongNoFrameskip-v4", "--config", ARTICLE_CONFIG,
                   "--stop", ARTICLE_STOP, "--storage-path", str(storage), timeout=60)
    assert_refused_for_want_of_a_gpu(proc)
    assert not storage.exists()


@pytest.mark.slow
def test_article_command_line_is_refused_with_one_line(storage, no_gpu):
    proc = run_cli("--config", ARTICLE_CONFIG, "--stop", ARTICLE_STOP, "--storage-path", str(storage), timeout=60)
    assert_one_line_error(proc, "GPU", '"num_gpus": 0')


@pytest.mark.slow
def test_article_quoted_strings_are_accepted_verbatim(storage, no_gpu):
    # The estimator's script_params add a pair of single quotes around each JSON value.
    proc = run_cli("--run", "IMPALA", "--env", "PongNoFrameskip-v4", "--config", f"'{ARTICLE_CONFIG}'",
                   "--stop", f"'{ARTICLE_STOP}'", "--storage-path", str(storage), timeout=60)
    assert_refused_for_want_of_a_gpu(proc)
    assert not storage.exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--config", '{"num_workers": 1'], ["--config", "not valid JSON"]),
        (["--config", "[1, 2]"], ["--config", "JSON object"]),
        (["--config", '{"num_workrs": 1}'], ["unknown key 'num_workrs'", "did you mean 'num_workers'"]),
        (["--config", '{"callbacks": {"on_train_result": 1}}'], ["callbacks", "no meaning"]),
        (["--config", '{"num_workers": -1}'], ["num_env_runners"]),
        (["--config", '{"lr": [[1000, 0.001], [0, 0.002]]}'], ["config key 'lr'", "a schedule is [[0, lr]"]),
        (["--config", '{"lr": [[0, 0.001], [1000, 0]]}'], ["config key 'lr'", "every lr above 0"]),
        (["--config", '{"vtrace_lambda": 1.5}'], ["config key 'vtrace_lambda'", "less than or equal to 1"]),
        (["--config", '{"vtrace_lambda": 0.9, "bootstrap_fragments": false}'], ["vtrace_lambda=0.9", "no lambda"]),
        (["--name", "a/b"], ["--name: 'a/b'", "letters, digits"]),
        (["--stop", '{"time_total_s": "soon"}'], ["--stop: threshold for 'time_total_s'", "finite number"]),
        (["--stop", '{"episode_rewrd_mean": 18}'], ["episode_rewrd_mean", "did you mean 'episode_reward_mean'"]),
        (["--stop", '{"episode_reward_mean": "x"}'], ["finite number"]),
        (["--backend", "nowhere"], ["backend 'nowhere' is not installed", "installed: ", "local"]),
        (["--env", "PongNoFramesKip-v4"], ["not an Atari", "did you mean 'PongNoFrameskip-v4'"]),
        (["--env", "CartPole-v1"], ["not an Atari"]),
        (["--run", "PPO"], ["--run"]),
        (["--config-file", "/nonexistent/train.yaml"], ["--config-file", "No such file"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(storage, args, fragments):
    proc = run_cli(*args, "--storage-path", str(storage), timeout=60)
    assert_one_line_error(proc, *fragments)
    assert not storage.exists()


def test_bad_config_file_content(storage, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_workers: [1\n")
    assert_one_line_error(run_cli("--config-file", str(bad), "--storage-path", str(storage)), "not valid yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("sample_batch_size: 50\nnum_sdg_iter: 2\n")
    assert_one_line_error(run_cli("--config-file", str(unknown), "--storage-path", str(storage)),
                          "num_sdg_iter", "did you mean 'num_sgd_iter'")
    assert not storage.exists()


@pytest.mark.slow
def test_unreachable_ray_address_fails_fast(storage):
    proc = run_cli("--preset", "smoke", "--ray-address", f"127.0.0.1:{free_port()}", "--storage-path", str(storage),
                   timeout=60)
    assert_one_line_error(proc, "--ray-address", "no Ray cluster answers")
    assert not storage.exists()


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:port"])
def test_malformed_ray_address(storage, address):
    assert_one_line_error(run_cli("--preset", "smoke", "--ray-address", address, "--storage-path", str(storage)),
                          "HOST:PORT")


@pytest.mark.slow
def test_unwritable_storage_path(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert_one_line_error(run_cli("--preset", "smoke", "--storage-path", str(a_file / "runs")), "is a file")
    # /proc refuses new files even to root, like a read-only mount.
    assert_one_line_error(run_cli("--preset", "smoke", "--storage-path", "/proc/pong-train-runs"), "cannot write")


def test_debug_shows_the_traceback(storage):
    proc = run_cli("--debug", "--config", '{"num_workrs": 1}', "--storage-path", str(storage))
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "num_workrs" in proc.stderr


SAVED_JOB_FAULTS = [
    ({"stop": {"episode_reward_maen": 18}}, ["stop", "episode_reward_maen", "did you mean 'episode_reward_mean'"]),
    ({"env": "PongNoFrameskip-v9"}, ["env", "'PongNoFrameskip-v9' is not an Atari", "did you mean 'PongNoFrameskip-v4'"]),
    ({"config": {"lr": "fast"}}, ["config.lr", "valid number", "fast"]),
    ({"name": "../elsewhere"}, ["name: '../elsewhere'", "letters, digits, dots, underscores or hyphens"]),
]


@pytest.mark.parametrize("fault, fragments", SAVED_JOB_FAULTS, ids=["stop-metric", "env-id", "type", "run-name"])
def test_a_saved_job_is_checked_as_the_command_line_is(tmp_path, fault, fragments):
    """--job FILE, --resume DIR and an Azure ML node's own command read a job.json: each refuses a bad one in the
    same one line, naming the field, before anything starts."""
    from pong_train.job import Job
    from pong_train_azureml.options import RUNS_FOLDER_FLAG

    def spoiled(job: Job, path) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = job.model_dump(mode="json")
        for key, value in fault.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) and key == "config" else value
        path.write_text(json.dumps(data))
        return str(path)

    local = Job(backend="local", stop={"timesteps_total": 1000}, storage_path=tmp_path / "runs")
    run_dir = tmp_path / "runs" / "earlier_run"
    node = Job(backend="azureml", stop={"timesteps_total": 1000}, storage_path=Path("runs"),
               options={"azureml": {"in_job": "ray", "instance_count": 1}})
    for args in (["--job", spoiled(local, tmp_path / "job.json")],
                 ["--resume", str(Path(spoiled(local, run_dir / "job.json")).parent)],
                 ["--job", spoiled(node, tmp_path / "node" / "job.json"), RUNS_FOLDER_FLAG, str(tmp_path / "out")]):
        assert_one_line_error(run_cli(*args, timeout=60), *fragments)
    assert not (tmp_path / "out").exists() and [p.name for p in (tmp_path / "runs").iterdir()] == ["earlier_run"]
