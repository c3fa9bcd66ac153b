"""The azureml backend, offline: real SDK objects and loaders, a fake service behind azure-core's transport,
and the in-job role on a real multi-node Ray cluster with a local MLflow store."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest
import yaml

# The SDK reads its polling interval when imported; the fake service answers at once.
os.environ.setdefault("AZUREML_RUN_POLLING_INTERVAL_MIN", "0")
os.environ.setdefault("AZUREML_RUN_POLLING_INTERVAL_MAX", "0")

from pong_train.testing.tools import assert_one_line_error, run_cli, run_dirs  # noqa: E402
from pong_train.job import Invocation, Job  # noqa: E402
from pong_train.loggers import read_metrics  # noqa: E402
from fake_azureml import FakeAzureMLTransport, FakeCredential  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
ARTICLE_CONFIG = '{"num_gpus": 1, "num_workers": 13}'
ARTICLE_STOP = '{"episode_reward_mean": 18, "time_total_s": 3600}'
# The same in today's names, for the tests of errors: the core prints a note per translated key before the backend
# checks anything, and the error must be the one line left.
CURRENT_CONFIG = '{"num_gpus_per_learner": 1, "num_env_runners": 13}'
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


def azureml_options(*backend_args: str) -> dict:
    """The backend's options as the core keeps them in a job: click parses `backend_args` with the options the core
    makes of the backend's model, and the model validates them."""
    from types import SimpleNamespace

    import click

    from pong_train.plugin_options import PLUGIN_ATTR, by_plugin, click_options, kept_options
    from pong_train_azureml.options import AzureOptions

    params = click_options(AzureOptions, "azureml")
    for param in params:
        setattr(param, PLUGIN_ATTR, "azureml")
    raw = click.Command("c", params=params).make_context("c", list(backend_args)).params
    return kept_options(SimpleNamespace(option_models={"azureml": AzureOptions}), by_plugin(params, raw))


def backend_job(storage: Path, *backend_args: str, config: dict | None = None) -> Job:
    """A job as the core hands it to the backend, built without the core's CLI: the smoke preset's settings (and
    `config` over them), the backend's options as the command line gives `backend_args`."""
    from pong_train.config import PRESETS, TrainConfig

    smoke = PRESETS["smoke"]
    return Job(backend="azureml", config=TrainConfig(**{**smoke["config"], **(config or {})}), stop=smoke["stop"],
               storage_path=storage, options=azureml_options(*backend_args))


def node_job(run_dir: Path) -> Job:
    """The job the nodes run, as the dry run uploads it."""
    from pong_train_azureml.spec import NODE_JOB, SNAPSHOT

    return Job.load(run_dir / "azureml" / SNAPSHOT / NODE_JOB)


@pytest.mark.slow
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
    # The nodes run the job file uploaded with the code; the command hands over what only it can resolve: the
    # mount point of the datastore folder that outlives the job, so a stopped job can be resumed.
    assert job.command.endswith(" && python -m pong_train --job job-files/job.json "
                                "--azureml-runs-folder '${{outputs.runs}}'")
    nodes = node_job(run_dir)
    assert nodes.config.num_gpus_per_learner == 1 and nodes.config.num_env_runners == 13  # translated once, here
    assert nodes.stop == json.loads(ARTICLE_STOP)
    assert nodes.options["azureml"]["in_job"] == "ray" and nodes.options["azureml"]["instance_count"] == 4
    assert str(nodes.storage_path) == "${{outputs.runs}}"
    runs = job.outputs["runs"]
    assert runs.mode == "rw_mount" and runs.type == "uri_folder"
    assert re.fullmatch(rf"azureml://datastores/workspaceblobstore/paths/pong-train/{run_dir.name}-[0-9a-f]{{8}}/",
                        runs.path)
    assert job.experiment_name == "rllib-pong-multi-node"
    assert int(job.resources.shm_size.rstrip("g")) >= 8
    # The spec round-trips: dumping what load_job read gives the same job.
    again = run_dir / "again.yaml"
    job.dump(again)
    assert load_job(again)._to_job()._to_dict() == job._to_dict()
    # The environment is pinned to what was tested here.
    pins = (run_dir / "azureml" / "environment.yaml").read_text()
    from importlib.metadata import version

    assert f"ray=={version('ray')}" in pins and "azureml-mlflow==" in pins
    # Uploads honour the ignore file: no virtual env, run directories or checkpoints.
    uploads = (run_dir / "azureml" / "upload.txt").read_text().splitlines()
    assert "pong_train/job.py" in uploads and "backends/pong_train_azureml/spec.py" in uploads
    assert "job-files/job.json" in uploads
    assert not [f for f in uploads if f.startswith((".venv/", "runs/", ".git/")) or "checkpoint_" in f]
    # No secret from the environment anywhere (the code snapshot is this project's source, this test included,
    # and the job file).
    for path in run_dir.rglob("*"):
        source = path.is_relative_to(run_dir / "azureml" / "code") and path.parent.name != "job-files"
        if path.is_file() and not source:
            text = path.read_text(errors="replace")
            assert not [name for name, value in SECRETS.items() if value in text], path


@pytest.mark.slow
def test_dry_run_files_hold_no_local_absolute_path(storage):
    assert dry_run(storage).returncode == 0
    [run_dir] = run_dirs(storage)
    out = run_dir / "azureml"
    assert yaml.safe_load((out / "job.yaml").read_text())["code"] == "code"  # beside job.yaml
    project = REPO
    for name in ("job.yaml", "environment.yaml", "compute.yaml", "upload.txt", "code/job-files/job.json"):
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
@pytest.mark.slow
def test_job_timeout_follows_the_stop_criteria(storage, extra, timeout):
    assert dry_run(storage, *extra).returncode == 0
    [run_dir] = run_dirs(storage)
    assert yaml.safe_load((run_dir / "azureml" / "job.yaml").read_text())["limits"]["timeout"] == timeout


def test_a_dry_run_of_a_grid_writes_one_job_whose_nodes_run_every_trial(storage):
    grid = '{"num_gpus": 1, "num_workers": 13, "lr": {"grid_search": [0.0005, 0.001, 0.002]}}'
    assert dry_run(storage, "--config", grid).returncode == 0
    [run_dir] = run_dirs(storage)
    nodes = node_job(run_dir)
    assert [trial.config.lr for trial in nodes.trials()] == [0.0005, 0.001, 0.002]
    assert all(trial.config.num_env_runners == 13 for trial in nodes.trials())
    spec = yaml.safe_load((run_dir / "azureml" / "job.yaml").read_text())
    assert spec["resources"]["instance_count"] == 4 and spec["distribution"]["type"] == "ray"
    assert spec["limits"]["timeout"] == 3 * 3600 + 30 * 60  # the trials may train one after another


CREDENTIALS_AND_OUTPUTS = [
    "config.json", ".env", "certs/server.pem", "deploy.key", ".azure/credentials", ".git/config",
    "runs/old/checkpoint_000001/state.pkl", "mlruns/0/meta.yaml", "mlflow.db", ".venv/bin/python",
    "venv/bin/activate",
    "experiments/earlier/metrics.jsonl",  # run directories under a --storage-path inside the project
]
SOURCE = ["README.md", "backends/pong_train_azureml/spec.py", "pong_train/job.py", "pyproject.toml"]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project to upload, with credentials, run outputs and a virtual env planted among its source."""
    from pong_train_azureml import spec

    project = tmp_path / "project"
    for rel in CREDENTIALS_AND_OUTPUTS + SOURCE:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("x\n")
    (project / "config.json").write_text('{"subscription_id": "s", "resource_group": "rg", "workspace_name": "ws"}')
    monkeypatch.setattr(spec, "project_root", lambda: project)
    return project


def uploads(run_dir: Path) -> list[str]:
    return (run_dir / "azureml" / "upload.txt").read_text().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("ignore_file", [None, ".amlignore", ".gitignore"])
def test_uploads_always_leave_credentials_and_outputs_behind(project, ignore_file):
    from pong_train_azureml import pong_train_launch

    if ignore_file:  # a user's list that forgets credentials, and even asks for one
        (project / ignore_file).write_text("*.log\n!config.json\n")
    storage = project / "experiments"
    assert pong_train_launch(backend_job(storage, "--dry-run"), Invocation()) == 0
    [run_dir] = [d for d in run_dirs(storage) if d.name != "earlier"]
    assert uploads(run_dir) == sorted([*SOURCE, "job-files/job.json"])


@pytest.mark.slow
def test_a_config_file_from_elsewhere_travels_inside_the_job_file(project, tmp_path):
    from pong_train.cli import main

    (tmp_path / "elsewhere").mkdir()
    config_file = tmp_path / "elsewhere" / "mycfg.yaml"
    config_file.write_text("lr: 0.00042\nnum_workers: 3\nstop:\n  time_total_s: 600\n")
    storage = project / "experiments"
    assert main(["--backend", "azureml", "--dry-run", "--config-file", str(config_file),
                 "--storage-path", str(storage)]) == 0
    [run_dir] = [d for d in run_dirs(storage) if d.name != "earlier"]
    # The job file holds the file's settings, resolved: the file itself need not travel, nor anything beside it.
    nodes = node_job(run_dir)
    assert nodes.config.lr == 0.00042 and nodes.config.num_env_runners == 3 and nodes.stop == {"time_total_s": 600}
    assert uploads(run_dir) == sorted([*SOURCE, "job-files/job.json"])  # no config.json, no .env


@pytest.mark.slow
def test_dry_run_checks_the_gpu_against_the_cluster_vm_size(storage):
    proc = dry_run(storage, "--config", CURRENT_CONFIG, "--vm-size", "Standard_D4s_v3")
    assert_one_line_error(proc, "GPU", "Standard_D4s_v3")
    assert run_dirs(storage) == []
    assert dry_run(storage, "--vm-size", "Standard_NC4as_T4_v3").returncode == 0


@pytest.mark.parametrize(
    "config, vm_size, build, image",
    [
        ('{"num_gpus": 0}', "Standard_D4s_v3", "cpu", "azureml/openmpi5.0-ubuntu24.04:"),
        ('{"num_gpus": 1}', "Standard_NC24ads_A100_v4", "cu126", "azureml/openmpi5.0-cuda12.6-ubuntu24.04:"),
    ],
)
@pytest.mark.slow
def test_torch_build_follows_the_vm_size(storage, config, vm_size, build, image):
    from importlib.metadata import version

    from azure.ai.ml import load_job

    proc = dry_run(storage, "--config", config, "--vm-size", vm_size)
    assert proc.returncode == 0, proc.stderr
    [run_dir] = run_dirs(storage)
    environment = yaml.safe_load((run_dir / "azureml" / "environment.yaml").read_text())
    [pip] = [entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict)]
    assert pip[0] == f"--extra-index-url https://download.pytorch.org/whl/{build}"
    assert f"torch=={version('torch').split('+')[0]}+{build}" in pip
    assert not [line for line in pip if line.startswith(("nvidia-", "triton"))]  # they come with torch's own build
    assert image in load_job(run_dir / "azureml" / "job.yaml").environment.image


@pytest.mark.slow
def test_mpi_launch_and_forwarded_variables(storage):
    from azure.ai.ml import load_job

    proc = dry_run(storage, "--azureml-launch", "mpi", "--env-var", "PONG_TRAIN_EXAMPLE",
                   env={"PONG_TRAIN_EXAMPLE": "forwarded", "OTHER_VARIABLE": "not-forwarded"})
    assert proc.returncode == 0, proc.stderr
    [run_dir] = run_dirs(storage)
    job = load_job(run_dir / "azureml" / "job.yaml")._to_job()
    assert job.distribution.type == "mpi" and node_job(run_dir).options["azureml"]["in_job"] == "mpi"
    assert job.environment_variables["PONG_TRAIN_EXAMPLE"] == "forwarded"
    assert "OTHER_VARIABLE" not in job.environment_variables


@pytest.mark.slow
def test_v1_dry_run_builds_the_article_estimator(storage):
    proc = dry_run(storage, "--azureml-sdk", "v1")
    assert proc.returncode == 0, proc.stderr
    assert "retired" in proc.stderr and "0.8.3" in proc.stderr
    [run_dir] = run_dirs(storage)
    estimator = json.loads((run_dir / "azureml" / "estimator.json").read_text())
    config = estimator["rl_config"]
    assert config["framework"] == "Ray"
    assert config["workers"]["nodecount"] == 3 and config["head"]["target"] == "ray-cluster"
    assert config["workers"]["target"] == "ray-cluster"  # one cluster unless told otherwise
    assert "retired" in estimator["notice"]


@pytest.mark.slow
def test_v1_keeps_the_articles_gpu_head_and_cpu_workers(storage):
    proc = dry_run(storage, "--azureml-sdk", "v1", "--head-compute", "head-gpu", "--worker-compute", "worker-cpu",
                   "--vm-size", "Standard_NC4as_T4_v3")
    assert proc.returncode == 0, proc.stderr
    [run_dir] = run_dirs(storage)
    config = json.loads((run_dir / "azureml" / "estimator.json").read_text())["rl_config"]
    assert config["head"]["target"] == "head-gpu" and config["workers"]["target"] == "worker-cpu"
    # use_gpu picks the estimator's GPU packages: for the head only.
    pip = {role: config[role]["environment"]["python"]["condaDependencies"]["dependencies"][1]["pip"]
           for role in ("head", "workers")}
    assert "tensorflow-gpu==1.14.0" in pip["head"] and "tensorflow-gpu==1.14.0" not in pip["workers"]
    assert config["head"]["arguments"] == ["--job", "job-files/job.json"]
    assert str(node_job(run_dir).storage_path) == "outputs/runs"  # the v1 estimator uploads outputs/ at the end


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--instance-count", "0"], ["--instance-count"]),
        (["--vm-size", "NC6-please"], ["--vm-size", "not an Azure VM size"]),
        (["--shm-size", "2g"], ["--shm-size", "8g"]),
        (["--env-var", "AZURE_CLIENT_SECRET"], ["looks like a secret"]),
        (["--tag", "novalue"], ["KEY=VALUE"]),
        (["--head-compute", "head-gpu"], ["--head-compute", "--azureml-sdk v1", "one cluster"]),
        # The service's own naming rules, checked before anything is contacted.
        (["--compute", "pong-train-cluster"], ["--compute: 'pong-train-cluster'", "2-16", "starting with a letter"]),
        (["--compute", "1cluster"], ["--compute", "starting with a letter"]),
        (["--experiment", "pong run"], ["--experiment: 'pong run'", "3-36"]),
        (["--datastore", "my-store"], ["--datastore: 'my-store'", "letters, digits and underscores"]),
        (["--display-name", "two\nlines"], ["--display-name", "no line breaks"]),
        (["--name", "runs/../x"], ["--name: 'runs/../x'", "letters, digits, dots, underscores or hyphens"]),
    ],
)
def test_bad_backend_options(storage, args, fragments):
    assert_one_line_error(dry_run(storage, "--config", CURRENT_CONFIG, *args, env=SECRETS), *fragments)
    assert run_dirs(storage) == []


def test_two_submissions_of_one_run_name_get_two_datastore_folders(tmp_path):
    """Run directory names are unique on one machine, to the second; the datastore is shared by every submitter."""
    from pong_train_azureml.spec import datastore_folder

    same_second = tmp_path / "IMPALA_PongNoFrameskip-v4_20261205-070000"
    folders = {datastore_folder(same_second) for _ in range(50)}
    assert len(folders) == 50 and all(f.startswith(same_second.name + "-") for f in folders)


def test_every_default_name_passes_the_services_naming_rules():
    from pong_train_azureml.options import NAME_RULES, azure_options

    defaults = azure_options({})
    for field in ("compute", "head_compute", "worker_compute", "experiment", "datastore"):
        rule, _ = NAME_RULES["compute" if field.endswith("compute") else field]
        assert rule.match(getattr(defaults, field)), field


def test_options_are_declared_once_and_survive_the_job_file(tmp_path, monkeypatch):
    from pong_train_azureml.options import azure_options

    monkeypatch.setenv("PONG_TRAIN_EXAMPLE", "forwarded")
    given = azureml_options("--workspace-config", str(tmp_path / "config.json"), "--tag", "a=b=c",
                            "--env-var", "PONG_TRAIN_EXAMPLE", "--azureml-in-job", "mpi")
    opts = azure_options(given)
    assert opts.tags == {"a": "b=c"} and opts.env_vars == {"PONG_TRAIN_EXAMPLE": "forwarded"}
    assert opts.in_job == "mpi" and opts.workspace_config == tmp_path / "config.json"
    assert azure_options(json.loads(json.dumps(given))) == opts  # as a JSON job file keeps them, typed again
    # Missing options take the declared defaults, the same as the command line's.
    assert azure_options({}) == azure_options(azureml_options())
    assert azure_options({}).max_instances == 2 and azure_options({}).head_compute == "pong-train"


def test_backend_option_without_its_backend_is_refused(storage):
    proc = run_cli("--compute", "ray-cluster", "--storage-path", str(storage))
    assert_one_line_error(proc, "--compute", "azureml")


def test_submit_without_a_workspace_config_is_refused(storage, tmp_path):
    proc = run_cli("--backend", "azureml", "--config", '{"num_gpus_per_learner": 0}',
                   "--storage-path", str(storage), cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "no Azure ML workspace", "config.json")
    assert run_dirs(storage) == []


@pytest.mark.parametrize("verb", ["status", "logs", "cancel", "download", "resume"])
def test_follow_up_commands_need_a_workspace(verb, tmp_path):
    proc = run_cli("azureml", verb, "some-job", cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "no Azure ML workspace")


def test_missing_extra_names_the_install_command(storage, tmp_path):
    # Shadow the Azure and MLflow packages, as on a machine without the azureml extra.
    for package in ("azure", "azureml", "mlflow"):
        (tmp_path / "shadow" / package).mkdir(parents=True)
        (tmp_path / "shadow" / package / "__init__.py").write_text(f"raise ImportError('no {package} here')\n")
    repo = REPO
    proc = dry_run(storage, "--config", CURRENT_CONFIG, env={"PYTHONPATH": f"{tmp_path / 'shadow'}:{repo}"})
    assert_one_line_error(proc, "pip install 'pong-train[azureml]'")


# --- The submit path, through the real azure-ai-ml client and a fake service behind azure-core's transport.

def submit_with(transport: FakeAzureMLTransport, *backend_args: str, no_wait: bool = False,
                config: dict | None = None) -> int:
    from pong_train_azureml import submit_and_follow
    from pong_train_azureml.options import azure_options

    job = backend_job(transport.storage, "--compute", "ray-cluster", "--instance-count", "4", *backend_args,
                      *(["--no-wait"] * no_wait), config=config)
    return submit_and_follow(job, azure_options(job.options), Invocation(), client_of(transport))


def client_of(transport: FakeAzureMLTransport):
    from azure.ai.ml import MLClient

    return MLClient(FakeCredential(), transport.sub, transport.rg, transport.ws, transport=transport)


@pytest.fixture
def service(tmp_path) -> FakeAzureMLTransport:
    transport = FakeAzureMLTransport(job_status_sequence=("Queued", "Running", "Completed"))
    transport.storage = tmp_path / "runs"
    return transport


def job_puts(transport: FakeAzureMLTransport) -> list[dict]:
    return [b["properties"] for m, u, b in transport.requests if m == "PUT" and "/jobs/" in u]


def job_put(transport: FakeAzureMLTransport) -> dict:
    [body] = job_puts(transport)
    return body


@pytest.mark.slow
def test_submit_sends_the_ray_job_and_follows_it_to_completion(service, capsys):
    assert submit_with(service, config={"num_gpus_per_learner": 1}) == 0
    sent = job_put(service)
    assert sent["distribution"]["distributionType"] == "Ray"
    assert sent["resources"]["instanceCount"] == 4
    assert sent["computeId"].endswith("/computes/ray-cluster")
    assert "python -m pong_train --job job-files/job.json" in sent["command"]
    assert sent["environmentId"] and "/environments/" in sent["environmentId"]
    assert sent["experimentName"] == "rllib-pong-multi-node"
    out = capsys.readouterr().out
    assert "submitted job" in out and "studio: https://ml.azure.com/runs/" in out and "Completed" in out
    [run_dir] = run_dirs(service.storage)
    assert (run_dir / "azureml" / "job-name.txt").read_text().strip() in out


@pytest.mark.slow
def test_submit_sends_the_job_file_with_the_code(service):
    from urllib.parse import parse_qs, urlparse

    from azure.ai.ml._utils._asset_utils import get_content_hash

    assert submit_with(service, "--azureml-launch", "mpi", no_wait=True, config={"lr": 0.00042}) == 0
    [run_dir] = run_dirs(service.storage)
    nodes = node_job(run_dir)
    assert nodes.config.lr == 0.00042 and nodes.options["azureml"]["in_job"] == "mpi"
    assert "no_wait" not in nodes.options["azureml"] and "workspace_config" not in nodes.options["azureml"]
    code = run_dir / "azureml" / "code"
    # The code the SDK submitted is that folder: it asked the service for a snapshot with the folder's hash.
    asked = [parse_qs(urlparse(u).query).get("hash") for m, u, b in service.requests if "/codes/" in u]
    assert [get_content_hash(code)] in asked


@pytest.mark.slow
def test_a_failing_job_maps_to_a_non_zero_exit(service, capsys):
    service.job_status_sequence = ["Queued", "Running", "Failed"]
    assert submit_with(service) == 1
    captured = capsys.readouterr()
    assert "failed" in captured.err and "ray worker died" in captured.err


@pytest.mark.slow
def test_no_wait_returns_after_submit(service):
    assert submit_with(service, no_wait=True) == 0
    assert not [u for m, u, b in service.requests if "/history/" in u]


@pytest.mark.slow
def test_missing_compute_is_created_and_existing_one_is_checked(service, capsys):
    service.computes.clear()
    assert submit_with(service, "--vm-size", "Standard_D4s_v3", no_wait=True) == 0
    [compute] = [b for m, u, b in service.requests if m == "PUT" and "/computes/" in u]
    assert compute["properties"]["properties"]["vmSize"] == "Standard_D4s_v3"
    # The cluster (NC4as_T4_v3 in the fake workspace) decides: a GPU asked for is checked against it, not this machine.
    other = FakeAzureMLTransport()
    other.storage = service.storage
    other.computes["ray-cluster"]["properties"]["properties"]["vmSize"] = "STANDARD_D2_V2"
    from pong_train.errors import UsageError

    with pytest.raises(UsageError, match=r"(?i)compute ray-cluster \(VM size STANDARD_D2_V2; GPU sizes: the NC, ND, NV"):
        submit_with(other, config={"num_gpus_per_learner": 1})
    assert "warning: compute ray-cluster exists with VM size" in capsys.readouterr().err


# --- Resuming a stopped job: a new job on the same datastore folder, through the same fake service.

def submitted_and_stopped(transport: FakeAzureMLTransport, status: str = "Canceled") -> str:
    assert submit_with(transport, "--low-priority", no_wait=True) == 0
    [name] = transport.jobs
    transport.job_statuses[name] = [status]
    return name


@pytest.mark.slow
def test_resume_submits_the_same_job_on_the_same_run_folder(service, capsys):
    from pong_train_azureml.resume import resume_job

    name = submitted_and_stopped(service)
    assert resume_job(client_of(service), name) == 0  # followed to Completed
    first, resumed = job_puts(service)
    for same in ("codeId", "environmentId", "computeId", "distribution", "experimentName", "resources"):
        assert resumed[same] == first[same], same
    assert resumed["outputs"]["runs"] == first["outputs"]["runs"]
    assert resumed["outputs"]["runs"]["mode"] == "ReadWriteMount"
    assert resumed["outputs"]["runs"]["uri"].startswith("azureml://datastores/workspaceblobstore/paths/pong-train/")
    # The settings come from the run directory, not from the first job's command line.
    command = resumed["command"]
    assert command.endswith("&& python -m pong_train --resume \"$1\"")  # the run's job.json says the rest
    assert "set -- '${{outputs.runs}}'/*/" in command and "--preset" not in command and "--stop" not in command
    assert resumed["tags"]["pong_train.resumed_from"] == name
    assert resumed["displayName"].endswith(" (resumed)")
    assert "Completed" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_dry_run_prints_the_job_and_submits_nothing(service, capsys):
    from azure.ai.ml import load_job

    from pong_train_azureml.resume import resume_job

    name = submitted_and_stopped(service, "Failed")
    capsys.readouterr()
    assert resume_job(client_of(service), name, dry_run=True) == 0
    assert len(job_puts(service)) == 1
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["outputs"]["runs"]["mode"] == "rw_mount" and "--resume" in printed["command"]
    assert load_job(source=None, params_override=[printed]).compute  # the SDK reads it back


@pytest.mark.slow
@pytest.mark.parametrize("status, reason", [("Running", "cancel it"), ("Completed", "stop criteria")])
def test_resume_refuses_a_job_that_has_not_stopped_short(service, status, reason):
    from pong_train.errors import UsageError
    from pong_train_azureml.resume import resume_job

    name = submitted_and_stopped(service, status)
    with pytest.raises(UsageError, match=reason):
        resume_job(client_of(service), name)
    assert len(job_puts(service)) == 1


@pytest.mark.slow
def test_resume_refuses_a_job_without_a_run_folder(service):
    from pong_train.errors import UsageError
    from pong_train_azureml.resume import resume_job

    name = submitted_and_stopped(service)
    del service.jobs[name]["properties"]["outputs"]["runs"]
    with pytest.raises(UsageError, match="keeps no run directory"):
        resume_job(client_of(service), name)


# --- The in-job role: a real multi-node Ray cluster, the environment an Azure ML job has, a local MLflow store.

@pytest.mark.slow
def test_in_job_role_trains_on_the_jobs_cluster_and_logs_to_its_run(three_node_cluster, tmp_path):
    import mlflow

    from test_azureml_in_job import node_args

    tracking = f"file://{tmp_path / 'mlruns'}"
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri(tracking)
    run_id = mlflow.MlflowClient().create_run(mlflow.MlflowClient().create_experiment("job")).info.run_id
    job_env = {
        **three_node_cluster["env"],
        "MLFLOW_TRACKING_URI": tracking, "MLFLOW_RUN_ID": run_id, "MLFLOW_ALLOW_FILE_STORE": "true",
        "AZUREML_RUN_ID": run_id, "RAY_ADDRESS": three_node_cluster["address"],
    }
    (tmp_path / "outputs").mkdir()
    proc = run_cli(*node_args("ray", 3, tmp_path / "outputs" / "runs", stop={"timesteps_total": 100},
                              config={"num_env_runners": 2}), env=job_env, cwd=tmp_path, timeout=400)
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


# --- The job's environment: resolved for its Linux nodes, whatever machine submits it.

SUBMITTERS = {
    "macos": {"os_name": "posix", "sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64",
              "platform_release": "23.4.0", "platform_version": "Darwin Kernel Version 23.4.0"},
    "windows": {"os_name": "nt", "sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64",
                "platform_release": "10", "platform_version": "10.0.22631"},
}


def dry_run_environment(storage: Path) -> str:
    """A dry run through the command line, in this process; the environment.yaml it wrote."""
    from pong_train.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["--backend", "azureml", "--dry-run", "--preset", "smoke", "--compute", "ray-cluster",
                     "--storage-path", str(storage)])
    assert code == 0, err.getvalue()
    [run_dir] = run_dirs(storage)
    return (run_dir / "azureml" / "environment.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("submitter", SUBMITTERS)
def test_the_jobs_environment_is_the_same_whatever_machine_submits_it(tmp_path, monkeypatch, submitter):
    """Environment markers (click's colorama on Windows, ...) are evaluated for the job's Linux nodes: packaging's
    marker environment made that of a Mac or a Windows machine changes nothing in the file."""
    import packaging.markers

    from_linux = dry_run_environment(tmp_path / "linux")
    here = packaging.markers.default_environment()
    monkeypatch.setattr(packaging.markers, "default_environment", lambda: {**here, **SUBMITTERS[submitter]})
    assert packaging.markers.Marker('platform_system == "Linux"').evaluate() is False  # the submitter is not Linux
    assert dry_run_environment(tmp_path / submitter) == from_linux
    assert "azureml-mlflow==" in from_linux and "colorama" not in from_linux


@pytest.mark.slow
def test_what_the_job_imports_is_in_its_environment_even_when_not_installed_here(tmp_path, monkeypatch):
    import importlib.metadata

    real = importlib.metadata.distribution

    def without_azureml_mlflow(name):
        if name.replace("_", "-").lower() == "azureml-mlflow":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_azureml_mlflow)
    tested = [line for line in (REPO / "constraints.txt").read_text().splitlines()
              if line.startswith("azureml-mlflow==")]
    assert tested and f"- {tested[0]}\n" in dry_run_environment(tmp_path)
