"""Talking to Azure ML (SDK v2): the workspace client, the compute cluster, submitting and following a job."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Optional

from pong_train.cluster import cpus_needed
from pong_train.config import check_gpus
from pong_train.errors import ServiceError, UsageError, closest
from pong_train.job import Job
from pong_train_azureml.failures import azure_errors, first_line
from pong_train_azureml.nodes import JOIN_TIMEOUT_S
from pong_train_azureml.options import GPU_VM_SIZE, AzureOptions
from pong_train_azureml.quota import check_room, reported

# Sizes whose GPUs are AMD's (Radeon Instinct MI25 and MI300X, Radeon Pro V620), by family or name: Azure's size list
# counts their GPUs as it counts NVIDIA's.
AMD_GPUS = re.compile(r"NVSv4|NVASv4|NVv4|NGADS|V620|MI300X|MI25", re.IGNORECASE)
# The other kinds of compute a workspace may hold under a name, by the SDK's type of each.
COMPUTE_KINDS = {"computeinstance": "a compute instance", "kubernetes": "an attached Kubernetes compute",
                 "virtualmachine": "an attached virtual machine", "synapsespark": "an attached Synapse Spark pool"}
# Final job statuses and the exit code each maps to.
EXIT_CODES = {"Completed": 0, "Failed": 1, "Canceled": 130, "NotResponding": 1}


def ml_client(opts: AzureOptions) -> Any:
    """The workspace client, from --subscription/--resource-group/--workspace or a config.json, once the workspace
    answered: no credentials, no access and a wrong workspace fail here, in one line, before anything else."""
    from azure.identity import DefaultAzureCredential

    client = workspace_client(opts, DefaultAzureCredential())
    with azure_errors(f"connecting to workspace {client.workspace_name}"):
        client.workspaces.get(client.workspace_name)
    return client


def workspace_client(opts: AzureOptions, credential: Any) -> Any:
    from azure.ai.ml import MLClient
    from azure.ai.ml.exceptions import ValidationException

    named = (opts.subscription, opts.resource_group, opts.workspace)
    if all(named):
        return MLClient(credential, *named)
    if any(named):
        raise UsageError("give all three of --subscription, --resource-group and --workspace, or a config.json")
    config = opts.workspace_config or Path.cwd()
    if opts.workspace_config is not None and not opts.workspace_config.exists():
        raise UsageError(f"--workspace-config {opts.workspace_config} does not exist")
    try:
        return MLClient.from_config(credential, path=str(config))
    except ValidationException:
        raise UsageError(
            "no Azure ML workspace: put the workspace's config.json here (Azure ML studio > workspace > "
            "Download config file), or give --subscription, --resource-group and --workspace"
        ) from None


def ensure_compute(client: Any, wanted: Any, job: Job, instance_count: int) -> str:
    """Reuse the cluster if present (warning where it differs from what was asked), else create it, once the job is
    known to fit it and the subscription's quota by the workspace's own facts (check_fits, check_room); returns the
    VM size the job will actually run on."""
    from azure.core.exceptions import ResourceNotFoundError

    with azure_errors(f"reading compute {wanted.name}"):
        try:
            existing = client.compute.get(wanted.name)
        except ResourceNotFoundError:
            existing = None
    if existing is not None:
        check_is_a_cluster(existing)
        warn_where_it_differs(existing, wanted)
    cluster = existing if existing is not None else wanted
    location = cluster.location or workspace_location(client)
    size = vm_size_facts(client, cluster.size, location)
    check_fits(job, size, wanted.name, cluster.max_instances, instance_count)
    check_room(client, cluster, existing is not None, size, instance_count, location)
    if existing is not None:
        return existing.size
    print(f"creating compute cluster {wanted.name} ({wanted.size}, {wanted.min_instances}-"
          f"{wanted.max_instances} nodes)", file=sys.stderr)
    with azure_errors(f"creating compute {wanted.name}"):
        client.compute.begin_create_or_update(wanted).result()
    return wanted.size


def check_is_a_cluster(existing: Any) -> None:
    """Jobs of several nodes run on an Azure ML compute cluster; the name may be taken by another kind of compute."""
    kind = (existing.type or "").lower()
    if kind != "amlcompute":
        raise UsageError(f"compute {existing.name} is {COMPUTE_KINDS.get(kind, f'a {kind} compute')}, not an Azure ML "
                         "compute cluster (AmlCompute); give --compute the name of a cluster, or a new name to create "
                         "one")


def workspace_location(client: Any) -> str:
    """The workspace's region: where a new cluster is made."""
    with azure_errors(f"reading workspace {client.workspace_name}"):
        return client.workspaces.get(client.workspace_name).location


def warn_where_it_differs(existing: Any, wanted: Any) -> None:
    """The cluster is used as it is; say where it differs from what this command asked for."""
    checks = [
        ("VM size", (existing.size or "").lower(), wanted.size.lower()),
        ("min instances", existing.min_instances, wanted.min_instances),
        ("max instances", existing.max_instances, wanted.max_instances),
        ("idle seconds before scale-down", int(existing.idle_time_before_scale_down or 0),
         wanted.idle_time_before_scale_down),
        ("tier", (existing.tier or "").lower().replace("lowpriority", "low_priority"), wanted.tier),
    ]
    if wanted.network_settings is not None:
        checks.append(("virtual network", network_of(existing.network_settings), network_of(wanted.network_settings)))
    for what, have, asked in checks:
        if have != asked:
            print(f"warning: compute {wanted.name} exists with {what} {have}, not {asked}; using it as it is",
                  file=sys.stderr)


def network_of(settings: Any) -> str:
    """The virtual network and subnet of a cluster's NetworkSettings, "vnet/subnet": as asked, by name (or the
    subnet's ARM id), or as read back, where the service gives the subnet's ARM id
    (…/virtualNetworks/VNET/subnets/SUBNET) and the SDK leaves vnet_name None."""
    subnet = getattr(settings, "subnet", None) or ""
    found = re.search(r"/virtualNetworks/([^/]+)/subnets/([^/]+)", subnet, re.IGNORECASE)
    if found:
        return f"{found.group(1)}/{found.group(2)}".lower()
    vnet = getattr(settings, "vnet_name", None)
    return f"{vnet}/{subnet}".lower() if vnet else "none"


def vm_size_facts(client: Any, vm_size: str, location: str) -> Any:
    """`vm_size` as `location` offers it to compute clusters (the SDK's VmSize: vCPUs, GPUs, memory, family); a size
    the region does not offer is refused, with the closest one it does."""
    with azure_errors(f"listing the VM sizes of region {location}"):
        offered = {size.name.lower(): size
                   for size in client.compute.list_sizes(location=location, compute_type="AmlCompute")}
    if vm_size.lower() not in offered:
        near = closest(vm_size.lower(), offered)
        raise UsageError(f"VM size {vm_size} is not offered to Azure ML compute clusters in region {location}"
                         + (f" (did you mean {offered[near].name}?)" if near else "")
                         + "; az ml compute list-sizes lists those it offers (--vm-size)")
    return offered[vm_size.lower()]


def check_fits(job: Job, size: Any, compute: str, max_nodes: int, instance_count: int) -> None:
    """The job fits the VM size and the cluster, by the workspace's facts: GPUs, their maker, nodes, vCPUs."""
    where = f"compute {compute} (VM size {size.name}"
    check_gpus(job.config, size.gpus or 0, f"{where}; GPU sizes: the NC, ND, NV families, --vm-size)")
    if (size.gpus or 0) > 0 and AMD_GPUS.search(f"{size.family} {size.name}"):
        raise UsageError(f"{where}) has AMD GPUs, and the job's image and torch build are CUDA's, for NVIDIA GPUs; "
                         f"pick an NVIDIA size (NC or ND family, such as {GPU_VM_SIZE}) with --vm-size")
    if max_nodes < instance_count:
        raise UsageError(f"compute {compute} allows at most {max_nodes} nodes and --instance-count asks for "
                         f"{instance_count}; lower --instance-count, or raise its maximum: az ml compute update "
                         f"--name {compute} --max-instances {instance_count}")
    runners = job.config.num_env_runners
    cpus = (reported(size, "v_cp_us", "vCPUs") or 0) * instance_count
    if runners is not None and cpus and cpus_needed(job.config, runners) > cpus:
        raise UsageError(f"num_env_runners={runners} needs {cpus_needed(job.config, runners):g} CPUs (one per env "
                         f"runner plus one for the learner) and {instance_count} nodes of {size.name} have {cpus}; "
                         "lower num_workers in --config, or raise --instance-count, or pick a bigger --vm-size")


def submit(client: Any, job_spec: Any) -> Any:
    """Submit the job; the SDK uploads the code snapshot and registers the environment. A job the service took
    without its Ray distribution is cancelled (check_distribution)."""
    with azure_errors("submitting the job"):
        created = client.jobs.create_or_update(job_spec)
    check_distribution(client, job_spec, created)
    print(f"submitted job {created.name}")
    print(f"studio: {created.studio_url}")
    return created


def check_distribution(client: Any, job_spec: Any, created: Any) -> None:
    """The job the service echoes back still has the Ray distribution it was sent with. A service that does not
    know RayDistribution (azure-ai-ml 1.35 sends it on api-version 2025-01-01-preview) drops it, and Azure ML then
    starts no Ray: the nodes would wait JOIN_TIMEOUT_S for a cluster and fail."""
    asked, got = (getattr(getattr(job, "distribution", None), "type", None) for job in (job_spec, created))
    if asked != "ray" or got == "ray":
        return
    try:
        cancel(client, created.name)
        cancelled = f"job {created.name} was cancelled"
    except ServiceError as err:
        cancelled = f"cancel job {created.name}: pong-train azureml cancel {created.name} ({err})"
    raise ServiceError(f"the workspace's Azure ML service dropped the job's Ray distribution (RayDistribution), so "
                       f"no Ray would start and its nodes would fail after {JOIN_TIMEOUT_S} s; {cancelled}; submit "
                       "it again with --azureml-launch mpi, which starts Ray itself")


def follow(client: Any, name: str) -> int:
    """Stream status and logs until the job ends; the final status becomes the exit code.

    Ctrl-C stops following, not the job: the message says so and how to cancel it.
    """
    from azure.ai.ml.exceptions import JobException

    try:
        with azure_errors(f"following job {name}"):
            try:
                client.jobs.stream(name)
            except JobException as err:
                if isinstance(err.__cause__, KeyboardInterrupt):  # the SDK turns Ctrl-C into a JobException
                    raise KeyboardInterrupt from None
                reason = re.search(r'"message":\s*"([^"]+)"', str(err))
                print(f"pong-train: job {name} failed: "
                      f"{reason.group(1) if reason else first_line(err)}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"pong-train: stopped following; job {name} keeps running in Azure ML (and its compute keeps billing). "
              f"Follow it again: pong-train azureml logs {name}; cancel it: pong-train azureml cancel {name}",
              file=sys.stderr)
        return 130
    status = job_status(client, name)
    print(f"job {name}: {status}")
    return EXIT_CODES.get(status, 1)


def job_status(client: Any, name: str) -> str:
    with azure_errors(f"job {name}"):
        status = client.jobs.get(name).status
    return getattr(status, "value", status)


def cancel(client: Any, name: str) -> None:
    with azure_errors(f"cancelling job {name}"):
        client.jobs.begin_cancel(name).result()


def download(client: Any, name: str, out: Optional[Path]) -> Path:
    target = out or Path("azureml-downloads") / name
    with azure_errors(f"downloading job {name}"):
        client.jobs.download(name, download_path=str(target), all=True)
    return target
