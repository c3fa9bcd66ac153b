"""The azureml backend, offline: real SDK objects and loaders, a fake service behind azure-core's transport,
and the in-job role on a real multi-node Ray cluster with a local MLflow store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

# The SDK reads its polling interval when imported; the fake service answers at once.
os.environ.setdefault("AZUREML_RUN_POLLING_INTERVAL_MIN", "0")
os.environ.setdefault("AZUREML_RUN_POLLING_INTERVAL_MAX", "0")

from conftest import assert_one_line_error, run_cli, run_dirs  # noqa: E402
from pong_train.loggers import read_metrics  # noqa: E402
from fake_azureml import FakeAzureMLTransport, FakeCredential  # noqa: E402

ARTICLE_CONFIG = '{"num_gpus": 1, "num_workers": 13}'
ARTICLE_STOP = '{"episode_reward_mean": 18, "time_total_s": 3600}'
SECRETS = {
    "AZURE_CLIENT_SECRET": "client-secret-value-0123456789",
    "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountKey=account-key-value-42",
    "RAY_AUTH_TOKEN": "ray-auth-token-value-abcdef",
    "AZUREML_RUN_TOKEN": "run-token-value-987",
}


def dry_run(storage: Path, *extra: str, env: dict | None = None):
    return run_cli("--backend", "azureml", "--dry-run", "--run", "IMPALA", "--env", "PongNoFrameskip-v4",
                   "--config", ARTICLE_CONFIG, "--stop", ARTICLE_STOP, "--compute", "ray-cluster",
                   "--instance-count", "4", "--storage-path", str(storage), *extra, env=env, timeout=120)


def test_dry_run_writes_a_job_that_load_job_reads_back(storage, monkeypatch):
    from azure.ai.ml import load_job

    proc = dry_run(storage, env=SECRETS)
    assert proc.returncode == 0, proc.stderr
    [run_dir] = run_dirs(storage)
    spec = run_dir / "azureml" / "job.yaml"
    assert f"az ml job create --file {spec}" in proc.stdout
    monkeypatch.chdir(spec.parent)  # _to_job() resolves the spec's relative code from the working folder
    job = load_job(spec)._to_job()
    assert job.distribution.type == "ray" and job.resources.instance_count == 4
    assert job.compute == "ray-cluster"
    assert f"--config '{ARTICLE_CONFIG}'" in job.command and f"--stop '{ARTICLE_STOP}'" in job.command
    assert "--azureml-in-job ray" in job.command  # the job says explicitly that it runs inside the job
    assert job.experiment_name == "rllib-pong-multi-node"
    assert int(job.resources.shm_size.rstrip("g")) >= 8
    # The spec round-trips: dumping what load_job read gives the same job.
    again = run_dir / "again.yaml"
    job.dump(again)
    assert load_job(again)._to_job()._to_dict() == job._to_dict()
    # The environment is pinned to what was tested here.
    pins = (run_dir / "azureml" / "environment.yaml").read_text()
    from importlib.metadata import version

    assert f"ray=={version('ray')}" in pins and "torch==2.13.0\n" in pins and "azureml-mlflow==" in pins
    # Uploads honour the ignore file: no virtual env, run directories or checkpoints.
    uploads = (run_dir / "azureml" / "upload.txt").read_text().splitlines()
    assert "pong_train/cli.py" in uploads and "backends/pong_train_azureml/spec.py" in uploads
    assert not [f for f in uploads if f.startswith((".venv/", "runs/", ".git/")) or "checkpoint_" in f]
    # No secret from the environment anywhere (the code snapshot is this project's source, this test included).
    for path in run_dir.rglob("*"):
        if path.is_file() and not path.is_relative_to(run_dir / "azureml" / "code"):
            text = path.read_text(errors="replace")
            assert not [name for name, value in SECRETS.items() if value in text], path


def test_dry_run_files_hold_no_local_absolute_path(storage):
    assert dry_run(storage).returncode == 0
    [run_dir] = run_dirs(storage)
    out = run_dir / "azureml"
    assert yaml.safe_load((out / "job.yaml").read_text())["code"] == "code"  # beside job.yaml
    project = Path(__file__).resolve().parents[1]
    for name in ("job.yaml", "environment.yaml", "compute.yaml", "upload.txt"):
        text = (out / name).read_text()
        assert not [local for local in (project, Path.home(), storage.resolve()) if str(local) in text], name


@pytest.mark.parametrize(
    "extra, timeout",
    [
        ((), 3600 + 30 * 60),  # the article's hour of training, plus start-up and install
        (("--stop", '{"episode_reward_mean": 18}'), 24 * 3600),  # no time criterion: a day
        (("--timeout", "900"), 900),
    ],
)
def test_job_timeout_follows_the_stop_criteria(storage, extra, timeout):
    assert dry_run(storage, *extra).returncode == 0
    [run_dir] = run_dirs(storage)
    assert yaml.safe_load((run_dir / "azureml" / "job.yaml").read_text())["limits"]["timeout"] == timeout


def write_config_file(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "mycfg.yaml").write_text("lr: 0.0005\nstop:\n  time_total_s: 600\n")
    return folder / "mycfg.yaml"


def test_a_config_file_from_outside_the_project_travels_with_the_job(storage, tmp_path):
    from azure.ai.ml import load_job

    config_file = write_config_file(tmp_path / "elsewhere")
    proc = dry_run(storage, "--config-file", str(config_file))
    assert proc.returncode == 0, proc.stderr
    [run_dir] = run_dirs(storage)
    job = load_job(run_dir / "azureml" / "job.yaml")._to_job()
    assert "--config-file job-files/mycfg.yaml" in job.command  # relative to the code, the job's working folder
    assert "job-files/mycfg.yaml" in (run_dir / "azureml" / "upload.txt").read_text().splitlines()
    assert (run_dir / "azureml" / job.code / "job-files" / "mycfg.yaml").read_text() == config_file.read_text()


CREDENTIALS_AND_OUTPUTS = [
    "config.json", ".env", "certs/server.pem", "deploy.key", ".azure/credentials", ".git/config",
    "runs/old/checkpoint_000001/state.pkl", "mlruns/0/meta.yaml", ".venv/bin/python", "venv/bin/activate",
    "experiments/earlier/metrics.jsonl",  # run directories under a --storage-path inside the project
]
SOURCE = ["README.md", "backends/pong_train_azureml/spec.py", "pong_train/cli.py", "pyproject.toml"]


@pytest.mark.parametrize("ignore_file", [None, ".amlignore", ".gitignore"])
def test_uploads_always_leave_credentials_and_outputs_behind(tmp_path, monkeypatch, ignore_file):
    from pong_train_azureml import pong_train_launch, spec
    from test_config import resolve

    project = tmp_path / "project"
    for rel in CREDENTIALS_AND_OUTPUTS + SOURCE:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("x\n")
    (project / "config.json").write_text('{"subscription_id": "s", "resource_group": "rg", "workspace_name": "ws"}')
    if ignore_file:  # a user's list that forgets credentials, and even asks for one
        (project / ignore_file).write_text("*.log\n!config.json\n")
    monkeypatch.setattr(spec, "project_root", lambda: project)
    storage = project / "experiments"
    assert pong_train_launch(resolve(["--backend", "azureml", "--dry-run", "--preset", "smoke",
                                      "--storage-path", str(storage)])) == 0
    [run_dir] = [d for d in run_dirs(storage) if d.name != "earlier"]
    assert (run_dir / "azureml" / "upload.txt").read_text().splitlines() == SOURCE


def test_dry_run_checks_the_gpu_against_the_cluster_vm_size(storage):
    proc = dry_run(storage, "--vm-size", "Standard_D4s_v3")
    assert_one_line_error(proc, "GPU", "Standard_D4s_v3")
    assert run_dirs(storage) == []
    assert dry_run(storage, "--vm-size", "Standard_NC6").returncode == 0


def test_mpi_launch_and_forwarded_variables(storage):
    from azure.ai.ml import load_job

    proc = dry_run(storage, "--azureml-launch", "mpi", "--env-var", "PONG_TRAIN_EXAMPLE",
                   env={"PONG_TRAIN_EXAMPLE": "forwarded", "OTHER_VARIABLE": "not-forwarded"})
    assert proc.returncode == 0, proc.stderr
    [run_dir] = run_dirs(storage)
    job = load_job(run_dir / "azureml" / "job.yaml")._to_job()
    assert job.distribution.type == "mpi" and "--azureml-in-job mpi" in job.command
    assert job.environment_variables["PONG_TRAIN_EXAMPLE"] == "forwarded"
    assert "OTHER_VARIABLE" not in job.environment_variables


def test_v1_dry_run_builds_the_article_estimator(storage):
    proc = dry_run(storage, "--azureml-sdk", "v1")
    assert proc.returncode == 0, proc.stderr
    assert "retired" in proc.stderr and "0.8.3" in proc.stderr
    [run_dir] = run_dirs(storage)
    estimator = json.loads((run_dir / "azureml" / "estimator.json").read_text())
    config = estimator["rl_config"]
    assert config["framework"] == "Ray"
    assert config["workers"]["nodecount"] == 3 and config["head"]["target"] == "ray-cluster"
    assert "retired" in estimator["notice"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--instance-count", "0"], ["--instance-count"]),
        (["--vm-size", "NC6-please"], ["--vm-size", "not an Azure VM size"]),
        (["--shm-size", "2g"], ["--shm-size", "8g"]),
        (["--env-var", "AZURE_CLIENT_SECRET"], ["looks like a secret"]),
        (["--tag", "novalue"], ["KEY=VALUE"]),
    ],
)
def test_bad_backend_options(storage, args, fragments):
    assert_one_line_error(dry_run(storage, *args, env=SECRETS), *fragments)
    assert run_dirs(storage) == []


def test_backend_option_without_its_backend_is_refused(storage):
    proc = run_cli("--compute", "ray-cluster", "--storage-path", str(storage))
    assert_one_line_error(proc, "--compute", "azureml")


def test_submit_without_a_workspace_config_is_refused(storage, tmp_path):
    proc = run_cli("--backend", "azureml", "--config", '{"num_gpus": 0}', "--storage-path", str(storage),
                   cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "no Azure ML workspace", "config.json")
    assert run_dirs(storage) == []


@pytest.mark.parametrize("verb", ["status", "logs", "cancel", "download"])
def test_follow_up_commands_need_a_workspace(verb, tmp_path):
    proc = run_cli("azureml", verb, "some-job", cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "no Azure ML workspace")


def test_missing_extra_names_the_install_command(storage, tmp_path):
    # Shadow the Azure and MLflow packages, as on a machine without the azureml extra.
    for package in ("azure", "azureml", "mlflow"):
        (tmp_path / "shadow" / package).mkdir(parents=True)
        (tmp_path / "shadow" / package / "__init__.py").write_text(f"raise ImportError('no {package} here')\n")
    repo = Path(__file__).resolve().parents[1]
    proc = dry_run(storage, env={"PYTHONPATH": f"{tmp_path / 'shadow'}:{repo}"})
    assert_one_line_error(proc, "pip install 'pong-train[azureml]'")


# --- The submit path, through the real azure-ai-ml client and a fake service behind azure-core's transport.

def submit_with(transport: FakeAzureMLTransport, *cli_args: str, no_wait: bool = False) -> int:
    from azure.ai.ml import MLClient

    from pong_train_azureml import submit_and_follow
    from pong_train_azureml.options import parse_options
    from test_config import resolve

    job = resolve(["--backend", "azureml", "--preset", "smoke", "--storage-path", str(transport.storage),
                   "--compute", "ray-cluster", "--instance-count", "4", *cli_args, *(["--no-wait"] * no_wait)])
    client = MLClient(FakeCredential(), transport.sub, transport.rg, transport.ws, transport=transport)
    return submit_and_follow(job, parse_options(job.options), client)


@pytest.fixture
def service(tmp_path) -> FakeAzureMLTransport:
    transport = FakeAzureMLTransport(job_status_sequence=("Queued", "Running", "Completed"))
    transport.storage = tmp_path / "runs"
    return transport


def job_put(transport: FakeAzureMLTransport) -> dict:
    [body] = [b for m, u, b in transport.requests if m == "PUT" and "/jobs/" in u]
    return body["properties"]


def test_submit_sends_the_ray_job_and_follows_it_to_completion(service, capsys):
    assert submit_with(service, "--config", '{"num_gpus": 1}') == 0
    sent = job_put(service)
    assert sent["distribution"]["distributionType"] == "Ray"
    assert sent["resources"]["instanceCount"] == 4
    assert sent["computeId"].endswith("/computes/ray-cluster")
    assert "python -m pong_train --backend azureml --azureml-in-job ray" in sent["command"]
    assert sent["environmentId"] and "/environments/" in sent["environmentId"]
    assert sent["experimentName"] == "rllib-pong-multi-node"
    out = capsys.readouterr().out
    assert "submitted job" in out and "studio: https://ml.azure.com/runs/" in out and "Completed" in out
    [run_dir] = run_dirs(service.storage)
    assert (run_dir / "azureml" / "job-name.txt").read_text().strip() in out


def test_submit_sends_a_config_file_from_outside_the_project_with_the_code(service, tmp_path):
    from urllib.parse import parse_qs, urlparse

    from azure.ai.ml._utils._asset_utils import get_content_hash

    config_file = write_config_file(tmp_path / "elsewhere")
    assert submit_with(service, "--config-file", str(config_file), no_wait=True) == 0
    assert "--config-file job-files/mycfg.yaml" in job_put(service)["command"]
    [run_dir] = run_dirs(service.storage)
    code = run_dir / "azureml" / "code"
    assert (code / "job-files" / "mycfg.yaml").read_text() == config_file.read_text()
    # The code the SDK submitted is that folder: it asked the service for a snapshot with the folder's hash.
    asked = [parse_qs(urlparse(u).query).get("hash") for m, u, b in service.requests if "/codes/" in u]
    assert [get_content_hash(code)] in asked


def test_a_failing_job_maps_to_a_non_zero_exit(service, capsys):
    service.job_status_sequence = ["Queued", "Running", "Failed"]
    assert submit_with(service) == 1
    captured = capsys.readouterr()
    assert "failed" in captured.err and "ray worker died" in captured.err


def test_no_wait_returns_after_submit(service):
    assert submit_with(service, no_wait=True) == 0
    assert not [u for m, u, b in service.requests if "/history/" in u]


def test_missing_compute_is_created_and_existing_one_is_checked(service, capsys):
    service.computes.clear()
    assert submit_with(service, "--vm-size", "Standard_D4s_v3", no_wait=True) == 0
    [compute] = [b for m, u, b in service.requests if m == "PUT" and "/computes/" in u]
    assert compute["properties"]["properties"]["vmSize"] == "Standard_D4s_v3"
    # The cluster (NC6 in the fake workspace) decides: a GPU asked for is checked against it, not this machine.
    other = FakeAzureMLTransport()
    other.storage = service.storage
    other.computes["ray-cluster"]["properties"]["properties"]["vmSize"] = "STANDARD_D2_V2"
    from pong_train.errors import UsageError

    with pytest.raises(UsageError, match="STANDARD_D2_V2"):
        submit_with(other, "--config", '{"num_gpus": 1}')
    assert "warning: compute ray-cluster exists with VM size" in capsys.readouterr().err


# --- The in-job role: a real multi-node Ray cluster, the environment an Azure ML job has, a local MLflow store.

@pytest.mark.slow
def test_in_job_role_trains_on_the_jobs_cluster_and_logs_to_its_run(three_node_cluster, tmp_path):
    import mlflow

    tracking = f"file://{tmp_path / 'mlruns'}"
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri(tracking)
    run_id = mlflow.MlflowClient().create_run(mlflow.MlflowClient().create_experiment("job")).info.run_id
    job_env = {
        **three_node_cluster["env"],
        "MLFLOW_TRACKING_URI": tracking, "MLFLOW_RUN_ID": run_id, "MLFLOW_ALLOW_FILE_STORE": "true",
        "AZUREML_RUN_ID": run_id, "RAY_ADDRESS": three_node_cluster["address"],
    }
    proc = run_cli("--backend", "azureml", "--azureml-in-job", "ray", "--instance-count", "3",
                   "--storage-path", str(tmp_path / "outputs" / "runs"), "--preset", "smoke",
                   "--config", '{"num_workers": 2}', "--stop", '{"timesteps_total": 100}',
                   env=job_env, cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = mlflow.MlflowClient()
    [run_dir] = run_dirs(tmp_path / "outputs" / "runs")
    iterations = list(range(1, len(read_metrics(run_dir / "metrics.jsonl")) + 1))
    history = client.get_metric_history(run_id, "episode_reward_mean")
    assert [m.step for m in client.get_metric_history(run_id, "episodes_total")] == iterations
    assert [m.step for m in client.get_metric_history(run_id, "timesteps_total")] == iterations
    # RLlib's own names too, from the first iteration that reported them.
    assert client.get_metric_history(run_id, "env_runners/num_env_steps_sampled_lifetime")[-1].step == iterations[-1]
    assert all(-21 <= m.value <= 21 for m in history)
    assert client.get_run(run_id).data.params["env"] == "PongNoFrameskip-v4"
    placement = json.loads((run_dir / "placement.json").read_text())
    assert len({r["node_id"] for r in placement["env_runners"]}) == 2  # the job's cluster, not a new local one
