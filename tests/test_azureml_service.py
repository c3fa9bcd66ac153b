"""The azureml backend against a workspace, as a user meets it on the command line, through the real azure-ai-ml client
and the fake service behind azure-core's transport: each fault the service can answer with comes out as one line naming
the cause and the fix; a job that does not fit the workspace's compute, by the workspace's own facts, is refused before
anything is created or submitted."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("azure.ai.ml")
sys.path.insert(0, str(Path(__file__).parent))

from fake_azureml import FakeAzureMLTransport, FakeCredential  # noqa: E402

pytestmark = pytest.mark.slow
ARM = "https://management.azure.com/"


class NoCredential:
    """What DefaultAzureCredential raises on a machine with no `az login` and no credentials in the environment."""

    def get_token(self, *scopes, **kwargs):
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError(
            "DefaultAzureCredential failed to retrieve a token from the included credentials.\nAttempted credentials:"
            "\n\tEnvironmentCredential: EnvironmentCredential authentication unavailable.")


@pytest.fixture
def workspace(monkeypatch) -> FakeAzureMLTransport:
    """The fake workspace, reached by the real MLClient through azure-core's transport layer (the SDK's own `transport`
    setting), signed in with a token credential that never calls Azure AD."""
    import azure.ai.ml
    import azure.identity

    transport = FakeAzureMLTransport(job_status_sequence=("Queued", "Running", "Completed"))
    transport.credential = FakeCredential()
    real_client = azure.ai.ml.MLClient
    monkeypatch.setattr(azure.ai.ml, "MLClient",
                        lambda *args, **kwargs: real_client(*args, transport=transport, **kwargs))
    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", lambda **kwargs: transport.credential)
    return transport


def pong_train(transport: FakeAzureMLTransport, *args: str) -> tuple[int, str, str]:
    from pong_train.cli import main

    where = ["--subscription", transport.sub, "--resource-group", transport.rg, "--workspace", transport.ws]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, *where])
    return code, out.getvalue(), err.getvalue()


def submit(transport: FakeAzureMLTransport, storage: Path, *args: str) -> tuple[int, str, str]:
    return pong_train(transport, "--backend", "azureml", "--preset", "smoke", "--compute", "ray-cluster",
                      "--instance-count", "2", "--no-wait", "--storage-path", str(storage), *args)


def status(transport: FakeAzureMLTransport, job: str = "job-1") -> tuple[int, str, str]:
    return pong_train(transport, "azureml", "status", job)


def the_one_line(code: int, err: str) -> str:
    # Notes, warnings and the steps that were done (connecting, ...) come before it; the error is one line.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("note:", "warning:"))
             and not re.search(r": done in [\d.]+ s$", line)]
    assert code != 0 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("pong-train: error: "), err
    return lines[0]


# fault name -> how the service answers, and the words of the cause and the fix the one line must hold
FAULTS = {
    "no-credentials": (None, ["no Azure credentials", "az login"]),
    "sign-in-refused": (dict(status=401, code="InvalidAuthenticationToken", message="The access token has expired.",
                             match=ARM), ["did not accept the sign-in", "The access token has expired.", "az login"]),
    "no-role": (dict(status=403, code="AuthorizationFailed", message=(
        "The client 'me@example.com' with object id '42' does not have authorization to perform action "
        "'Microsoft.MachineLearningServices/workspaces/read' over scope '/subscriptions/x'."), match=ARM),
        ["not allowed", "does not have authorization to perform action", "AzureML Data Scientist"]),
    "workspace-not-found": (dict(status=404, code="ResourceNotFound", message=(
        "The Resource 'Microsoft.MachineLearningServices/workspaces/ws' under resource group 'rg' was not found."),
        match="/workspaces/ws?"), ["not found", "workspaces/ws' under resource group 'rg'", "--workspace"]),
    "throttled": (dict(status=429, code="TooManyRequests", message="Rate limit exceeded.", match=ARM, times=99,
                       headers={"Retry-After": "0.01"}), ["throttling", "Rate limit exceeded.", "wait a few minutes"]),
    "network-down": (dict(status=None, match=ARM, times=99), ["cannot reach Azure", "Connection refused",
                                                                "check the network connection"]),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_is_one_line_with_its_cause_and_fix_for_submit_and_status(workspace, tmp_path, fault):
    injected, words = FAULTS[fault]
    for command in ("submit", "status"):
        workspace.faults.clear()
        if injected is None:
            workspace.credential = NoCredential()
        else:
            workspace.inject(**injected)
        if command == "submit":
            code, _, err = submit(workspace, tmp_path / "runs")
            assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), \
                "a failed submit left a run directory"
        else:
            code, _, err = status(workspace)
        line = the_one_line(code, err)
        assert code == 1 and all(word in line for word in words), (command, line)
        assert "plugin" not in line, f"the service's refusal is blamed on the plugin: {line}"


def test_a_job_that_does_not_exist_says_so_for_every_follow_up_command(workspace):
    for args in (["status", "no-such-job"], ["logs", "no-such-job"], ["cancel", "no-such-job"],
                 ["resume", "no-such-job", "--no-wait"]):
        code, _, err = pong_train(workspace, "azureml", *args)
        line = the_one_line(code, err)
        assert "job no-such-job" in line and "not found" in line and "check the job's name" in line, line


def test_a_throttled_request_is_retried_at_the_services_retry_after(workspace, tmp_path):
    assert submit(workspace, tmp_path / "runs")[0] == 0
    [job] = workspace.jobs
    workspace.inject(status=429, code="TooManyRequests", message="Rate limit exceeded.", match=f"/jobs/{job}?",
                     times=2, headers={"Retry-After": "0.2"})
    code, out, err = status(workspace, job)
    assert code == 0 and out.strip() in {"Queued", "Running", "Completed", "NotStarted"}, err
    assert workspace.faults[0]["times"] == 0  # both throttled replies were taken, and the third request answered


@pytest.mark.parametrize("code, message, words", [
    ("QuotaExceeded", "Operation could not be completed as it results in exceeding approved standardNCASv3_T4Family "
                      "Cores quota. Current Limit: 0.", ["over the subscription's quota", "Current Limit: 0",
                                                        "--instance-count"]),
    ("UserError", "The compute ray-cluster is in a failed state and cannot run jobs.\nMore: see the studio.",
     ["Azure ML refused it", "is in a failed state and cannot run jobs. (400 UserError)"]),
], ids=["quota", "rejected"])
def test_a_submit_the_service_rejects_is_its_first_line_and_leaves_no_run_directory(workspace, tmp_path, code,
                                                                                    message, words):
    workspace.inject(status=400, code=code, message=message, match="/jobs/")
    exit_code, _, err = submit(workspace, tmp_path / "runs")
    line = the_one_line(exit_code, err)
    assert all(word in line for word in words) and "More: see the studio" not in line, line
    assert not any((tmp_path / "runs").iterdir()), "a failed submit left a run directory"


def test_ctrl_c_while_following_says_the_job_keeps_running_and_how_to_cancel_it(workspace, tmp_path):
    assert submit(workspace, tmp_path / "runs")[0] == 0
    [job] = workspace.jobs
    workspace.inject(status=KeyboardInterrupt, match="/history/")
    code, _, err = pong_train(workspace, "azureml", "logs", job)
    assert code == 130, err
    assert f"job {job} keeps running in Azure ML" in err and f"pong-train azureml cancel {job}" in err


# -- checks from the workspace's facts, before anything is created or submitted

@pytest.mark.parametrize("args, words", [
    (["--instance-count", "6"], ["compute ray-cluster allows at most 4 nodes", "--instance-count asks for 6",
                                 "az ml compute update --name ray-cluster --max-instances 6"]),
    (["--compute", "fresh", "--vm-size", "Standard_NC4as_T4_v9"],
     ["VM size Standard_NC4as_T4_v9 is not offered", "did you mean Standard_NC4as_T4_v3?"]),
    (["--compute", "fresh", "--vm-size", "Standard_NV4as_v4"], ["has AMD GPUs", "pick an NVIDIA size"]),
    (["--compute", "fresh", "--vm-size", "Standard_D4s_v3", "--config", '{"num_gpus": 1}'],
     ["asks for 1 GPU(s) but compute fresh (VM size Standard_D4s_v3", "has 0"]),
    (["--compute", "fresh", "--vm-size", "Standard_D2_v2", "--config", '{"num_workers": 13}'],
     ["num_env_runners=13 needs 14 CPUs", "2 nodes of Standard_D2_v2 have 4", "--instance-count"]),
], ids=["cluster-too-small", "size-not-in-region", "amd-gpus", "gpu-on-cpu-size", "too-few-vcpus"])
def test_a_job_that_does_not_fit_the_workspace_is_refused_before_submission(workspace, tmp_path, args, words):
    code, _, err = submit(workspace, tmp_path / "runs", *args)
    line = the_one_line(code, err)
    assert code == 2 and all(word in line for word in words), line
    assert [(m, u) for m, u, _ in workspace.requests if m == "PUT"] == [], "something was created or submitted"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_job_that_fits_creates_its_cluster_of_an_offered_size_and_is_submitted(workspace, tmp_path):
    code, out, err = submit(workspace, tmp_path / "runs", "--compute", "fresh", "--vm-size", "standard_ds3_v2")
    assert code == 0, err
    puts = [u for m, u, _ in workspace.requests if m == "PUT"]
    assert any("/computes/fresh" in u for u in puts) and any("/jobs/" in u for u in puts)
    assert "submitted job" in out


# -- the fake service refuses what the real one refuses, by the service's documented rules

def test_a_job_over_the_subscriptions_quota_is_one_line_from_the_service(workspace, tmp_path):
    workspace.quota_vcpus = 8  # the cluster's NC6 nodes have 6 vCPUs each: 2 nodes need 12
    code, _, err = submit(workspace, tmp_path / "runs")
    line = the_one_line(code, err)
    assert code == 1 and "over the subscription's quota" in line and "Current Limit: 8" in line, line
    assert not any((tmp_path / "runs").iterdir())


def test_the_fake_refuses_what_the_service_refuses(workspace):
    """Straight through the SDK, past pong-train's own checks: the fake applies the service's rules itself."""
    from azure.ai.ml import MLClient, command
    from azure.ai.ml.entities import AmlCompute, Environment
    from azure.core.exceptions import HttpResponseError

    client = MLClient(FakeCredential(), workspace.sub, workspace.rg, workspace.ws)
    refused = {
        "a compute name that ends with a hyphen": lambda: client.compute.begin_create_or_update(
            AmlCompute(name="pong-", size="Standard_D4s_v3", max_instances=2)).result(),
        "a size the region does not offer": lambda: client.compute.begin_create_or_update(
            AmlCompute(name="pong", size="Standard_NC6s_v9", max_instances=2)).result(),
        "more nodes than the cluster's maximum": lambda: client.jobs.create_or_update(command(
            command="echo", environment=Environment(image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"),
            compute="ray-cluster", instance_count=5)),
    }
    for what, request in refused.items():
        with pytest.raises(HttpResponseError) as refusal:
            request()
        assert refusal.value.status_code == 400, what
    from azure.core.pipeline.transport import HttpRequest

    unsigned = FakeAzureMLTransport()  # the same service, asked without a token
    reply = unsigned.send(HttpRequest("GET", f"https://management.azure.com{unsigned.ws_prefix}?api-version=1"))
    assert reply.status_code == 401


@pytest.mark.parametrize("name", ["pong-train", "ab", "a" * 16, "a" * 17, "pong-", "1pong", "p", "pong_train",
                                  "Pong-2"])
def test_the_compute_name_rule_is_the_services(name):
    from fake_azureml import COMPUTE_NAME

    from pong_train.errors import UsageError
    from pong_train_azureml.options import azure_options

    try:
        azure_options({"azureml": {"compute": name}})
        accepted = True
    except UsageError:
        accepted = False
    assert accepted == bool(COMPUTE_NAME.fullmatch(name))


def test_the_source_is_uploaded_when_the_workspace_lacks_it(workspace, tmp_path):
    """The upload path, for real: the workspace holds no snapshot of this code, so the SDK uploads every file to the
    workspace's blob store and registers the code version that the job then names."""
    from fake_azureml import BlobStore

    workspace.code_snapshots_exist = False
    store = BlobStore(workspace)
    try:
        code, _, err = submit(workspace, tmp_path / "runs")
    finally:
        store.close()
    assert code == 0, err
    [run_dir] = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    sent = (run_dir / "azureml" / "upload.txt").read_text().split()
    uploaded = {key: blob["data"] for key, blob in (workspace.blobs or {}).items()
                if key.startswith(urlparse(store.url).path + "/")}
    missing = [rel for rel in sent if not any(key.endswith("/" + rel) for key in uploaded)]
    assert sent and missing == [], missing[:5]
    [job_py] = [data for key, data in uploaded.items() if key.endswith("/pong_train/job.py")]
    assert job_py == (run_dir / "azureml" / "code" / "pong_train" / "job.py").read_bytes()
    [job] = [body for method, url, body in workspace.requests if method == "PUT" and "/jobs/" in url]
    assert "/codes/" in job["properties"]["codeId"]
