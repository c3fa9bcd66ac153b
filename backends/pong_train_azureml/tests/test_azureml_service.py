"""The azureml backend against a workspace, as a user meets it on the command line, through the real azure-ai-ml client
and the fake service behind azure-core's transport: each fault the service can answer with comes out as one line naming
the cause and the fix; a job that does not fit the workspace's compute, by the workspace's own facts, is refused before
anything is created or submitted."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("azure.ai.ml")
from fake_azureml import (FakeAzureMLTransport, FakeCredential, aml_compute, compute_instance,  # noqa: E402
                          compute_node, vm_size)

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
    # Notes, warnings, the steps that were done (connecting, ...) and the SDK's upload progress bar come before it;
    # the error is one line.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("note:", "warning:"))
             and not re.search(r": done in [\d.]+ s$|^(\x1b\[\d+m)?Uploading code \(", line)]
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


# (VM family or None for the regional total, tier) -> [in use, limit], extra arguments, the one line's words
QUOTAS = {
    "family": (("standardNCASv3_T4Family", "dedicated"), [4, 8], [], [
        "needs 8 dedicated vCPUs (2 nodes of Standard_NC4as_T4_v3)",
        "Standard NCASv3_T4 Family Cluster Dedicated vCPUs quota in eastus has 4 free (4 of 8 in use)",
        "request a quota increase in the Azure portal", "--instance-count", "--vm-size"]),
    "regional-total": ((None, "dedicated"), [10, 12], [], [
        "needs 8 dedicated vCPUs", "Total Cluster Dedicated Regional vCPUs quota in eastus has 2 free"]),
    "low-priority": ((None, "low_priority"), [0, 4], ["--compute", "spot", "--vm-size", "Standard_NC24ads_A100_v4",
                                                      "--low-priority"], [
        "needs 48 low-priority vCPUs (2 nodes of Standard_NC24ads_A100_v4)",
        "Total Cluster LowPriority Regional vCPUs quota in eastus has 4 free (0 of 4 in use)"]),
}


@pytest.mark.parametrize("quota", QUOTAS)
def test_a_job_over_the_subscriptions_quota_is_refused_before_anything_is_created(workspace, tmp_path, quota):
    """The service would take the job and leave it queued for good; the quota the job runs over is the one line."""
    key, usage, args, words = QUOTAS[quota]
    workspace.quota[key] = usage
    code, _, err = submit(workspace, tmp_path / "runs", *args)
    line = the_one_line(code, err)
    assert code == 2 and all(word in line for word in words), line
    assert [(m, u) for m, u, _ in workspace.requests if m == "PUT"] == [], "something was created or submitted"


def test_the_nodes_a_cluster_holds_already_count_as_the_jobs(workspace, tmp_path):
    """Nodes left idle by an earlier job (until the idle time scales them down) are in use, and the job's to take."""
    workspace.nodes["ray-cluster"] = [compute_node("tvm-1"), compute_node("tvm-2")]
    workspace.quota[("standardNCASv3_T4Family", "dedicated")] = [8, 8]  # all held by those two nodes
    code, out, err = submit(workspace, tmp_path / "runs")
    assert code == 0 and "submitted job" in out, err
    code, _, err = submit(workspace, tmp_path / "runs", "--instance-count", "3")
    line = the_one_line(code, err)
    assert "needs 4 dedicated vCPUs (1 more node of Standard_NC4as_T4_v3)" in line and "has 0 free" in line, line


def test_a_quota_the_identity_may_not_read_is_not_checked(workspace, tmp_path):
    workspace.inject(status=403, code="AuthorizationFailed", match="/usages?", message=(
        "The client 'me@example.com' does not have authorization to perform action "
        "'Microsoft.MachineLearningServices/locations/usages/read' over scope '/subscriptions/x'."))
    code, out, err = submit(workspace, tmp_path / "runs")
    assert code == 0 and "submitted job" in out, err
    assert "may not read the subscription's Azure ML quota in eastus" in err and "not checked" in err


@pytest.mark.parametrize("kind, compute", [
    ("a compute instance", compute_instance("Standard_DS3_v2", "eastus")),
    ("an attached Kubernetes compute", {"properties": {"computeType": "Kubernetes", "computeLocation": "eastus",
                                                       "provisioningState": "Succeeded",
                                                       "properties": {"namespace": "default"}}}),
], ids=["compute-instance", "kubernetes"])
def test_a_compute_that_is_not_a_cluster_is_one_line(workspace, tmp_path, kind, compute):
    workspace.computes["dev-box"] = compute
    code, _, err = submit(workspace, tmp_path / "runs", "--compute", "dev-box")
    line = the_one_line(code, err)
    assert code == 2 and f"compute dev-box is {kind}, not an Azure ML compute cluster (AmlCompute)" in line, line
    assert "a new name to create one" in line


def test_a_cluster_in_another_region_is_checked_against_that_regions_sizes(workspace, tmp_path):
    workspace.sizes_elsewhere["westus3"] = [vm_size("Standard_NC80adis_H100_v5", "standardNCadsH100v5Family", 80, 2,
                                                    640.0)]
    workspace.computes["h100"] = aml_compute("Standard_NC80adis_H100_v5", "westus3")
    code, out, err = submit(workspace, tmp_path / "runs", "--compute", "h100")
    assert code == 0 and "submitted job" in out, err


def test_a_cluster_on_the_asked_virtual_network_is_used_without_a_warning(workspace, tmp_path):
    vnet = ["--compute", "private", "--vm-size", "Standard_D4s_v3", "--vnet", "ml-vnet", "--subnet", "training"]
    assert submit(workspace, tmp_path / "runs", *vnet)[0] == 0
    code, _, err = submit(workspace, tmp_path / "runs", *vnet)
    assert code == 0 and "warning" not in err, err
    code, _, err = submit(workspace, tmp_path / "runs", *vnet[:-4], "--vnet", "other-vnet")
    assert code == 0 and ("warning: compute private exists with virtual network ml-vnet/training, not "
                          "other-vnet/default") in err, err


# -- what the service or the storage does to a job it took

def test_a_service_that_drops_the_ray_distribution_has_the_job_cancelled_and_says_use_mpi(workspace, tmp_path):
    workspace.ignored_distributions = {"Ray"}  # a service that does not know RayDistribution
    code, _, err = submit(workspace, tmp_path / "runs")
    line = the_one_line(code, err)
    [job] = workspace.jobs
    assert code == 1 and "dropped the job's Ray distribution" in line and "no Ray would start" in line, line
    assert f"job {job} was cancelled" in line and "--azureml-launch mpi" in line, line
    assert status(workspace, job)[1].strip() == "Canceled"
    assert not any((tmp_path / "runs").iterdir()), "a cancelled submit left a run directory"
    assert submit(workspace, tmp_path / "runs", "--azureml-launch", "mpi")[0] == 0


@pytest.fixture
def storage_account(workspace):
    """The workspace's storage account, on 127.0.0.1, holding no snapshot of the code: the SDK uploads it."""
    from fake_azureml import BlobStore

    workspace.code_snapshots_exist = False
    store = BlobStore(workspace)
    yield store
    store.close()


def test_a_storage_account_without_shared_key_access_is_one_line_with_the_fix(workspace, storage_account, tmp_path):
    workspace.shared_key_access = False
    code, _, err = submit(workspace, tmp_path / "runs")
    line = the_one_line(code, err)
    assert code == 1 and "does not allow shared-key access (KeyBasedAuthenticationNotPermitted)" in line, line
    assert "Storage Blob Data Contributor" in line and "--system-datastores-auth-mode identity" in line, line
    assert not any((tmp_path / "runs").iterdir())


def test_a_storage_account_that_refuses_the_upload_names_the_storage_role(workspace, storage_account, tmp_path):
    workspace.inject(status=403, code="AuthorizationPermissionMismatch", match="PUT /fakestorage/", times=999,
                     message="This request is not authorized to perform this operation using this permission.")
    code, _, err = submit(workspace, tmp_path / "runs")
    line = the_one_line(code, err)
    assert code == 1 and "not authorized to perform this operation using this permission" in line, line
    assert "Storage Blob Data Contributor role on the workspace's storage account" in line, line
    assert "AzureML Data Scientist" not in line, line


# -- how the SDKs word it

def test_an_expired_az_login_says_to_sign_in_again(workspace, tmp_path, monkeypatch):
    """DefaultAzureCredential, for real, in front of an Azure CLI whose sign-in Azure AD no longer renews."""
    from azure.identity._credentials.default import DefaultAzureCredential

    az = tmp_path / "bin" / "az"
    az.parent.mkdir()
    az.write_text("#!/bin/sh\necho 'ERROR: AADSTS700082: The refresh token has expired due to inactivity. The "
                  "inactivity threshold is 90.00:00:00. Trace ID: 1 Correlation ID: 2 Timestamp: 2025-01-01' >&2\n"
                  "echo 'Interactive authentication is needed. Please run:\naz login --scope "
                  "https://management.core.windows.net//.default' >&2\nexit 1\n")
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{az.parent}:/usr/bin:/bin")
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME",
                 "AZURE_TOKEN_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    workspace.credential = DefaultAzureCredential(
        exclude_managed_identity_credential=True, exclude_workload_identity_credential=True,
        exclude_shared_token_cache_credential=True, exclude_powershell_credential=True,
        exclude_developer_cli_credential=True, exclude_visual_studio_code_credential=True,
        exclude_broker_credential=True)
    code, _, err = status(workspace)
    line = the_one_line(code, err)
    assert code == 1 and "your Azure CLI sign-in has expired" in line and "run az login" in line, line
    assert "AADSTS700082: The refresh token has expired due to inactivity" in line and "Trace ID" not in line, line
    assert "no Azure credentials" not in line, line


def test_an_sdk_validation_error_is_its_words_not_its_colours():
    """azure-ai-ml colours its validation messages and opens them with a coloured banner."""
    from azure.ai.ml._exception_helper import log_and_raise_error
    from azure.ai.ml.exceptions import ErrorTarget, ValidationErrorType, ValidationException

    from pong_train.errors import ServiceError
    from pong_train_azureml.failures import azure_errors

    with pytest.raises(ServiceError) as raised, azure_errors("submitting the job"):
        log_and_raise_error(ValidationException(
            message="Asset ray-env does not exist in workspace ws.", no_personal_data_message="-",
            target=ErrorTarget.ASSET, error_type=ValidationErrorType.RESOURCE_NOT_FOUND))
    assert str(raised.value) == "submitting the job: Asset ray-env does not exist in workspace ws."


# -- the fake service refuses what the real one refuses, by the service's documented rules

def test_the_fake_queues_a_job_over_the_quota_as_the_service_does(workspace):
    """The service takes a job its quota cannot hold; the job waits, queued, for nodes its cluster never gets."""
    from azure.ai.ml import MLClient, command
    from azure.ai.ml.entities import Environment

    workspace.quota[("standardNCASv3_T4Family", "dedicated")] = [0, 4]  # the cluster's NC4as_T4_v3: 4 vCPUs a node
    client = MLClient(FakeCredential(), workspace.sub, workspace.rg, workspace.ws)
    job = client.jobs.create_or_update(command(
        command="echo", environment=Environment(image="mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04"),
        compute="ray-cluster", instance_count=2))
    assert [client.jobs.get(job.name).status for _ in range(3)] == ["Queued"] * 3


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
            AmlCompute(name="pong", size="Standard_NC8as_T4_v9", max_instances=2)).result(),
        "more nodes than the cluster's maximum": lambda: client.jobs.create_or_update(command(
            command="echo", environment=Environment(image="mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04"),
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
