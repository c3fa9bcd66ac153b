"""Talking to Azure ML (SDK v2): the workspace client, the compute cluster, submitting and following a job."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Optional

from pong_train.cluster import cpus_needed
from pong_train.config import check_gpus
from pong_train.errors import UsageError, closest
from pong_train.job import Job
from pong_train_azureml.failures import azure_errors
from pong_train_azureml.options import GPU_VM_SIZE, AzureOptions

# Sizes whose GPUs are AMD's (Radeon Instinct MI25 and MI300X, Radeon Pro V620), by family or name: Azure's size list
# counts their GPUs as it counts NVIDIA's.
AMD_GPUS = re.compile(r"NVSv4|NVASv4|NVv4|NGADS|V620|MI300X|MI25", re.IGNORECASE)
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
    known to fit it by the workspace's own facts (check_fits); returns the VM size the job will actually run on."""
    from azure.core.exceptions import ResourceNotFoundError

    with azure_errors(f"reading compute {wanted.name}"):
        try:
            existing = client.compute.get(wanted.name)
        except ResourceNotFoundError:
            existing = None
    if existing is not None:
        warn_where_it_differs(existing, wanted)
    size = vm_size_facts(client, existing.size if existing is not None else wanted.size)
    max_nodes = existing.max_instances if existing is not None else wanted.max_instances
    check_fits(job, size, wanted.name, max_nodes, instance_count)
    if existing is not None:
        return existing.size
    print(f"creating compute cluster {wanted.name} ({wanted.size}, {wanted.min_instances}-"
          f"{wanted.max_instances} nodes)", file=sys.stderr)
    with azure_errors(f"creating compute {wanted.name}"):
        client.compute.begin_create_or_update(wanted).result()
    return wanted.size


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
        have = getattr(existing.network_settings, "vnet_name", None)
        checks.append(("virtual network", have, wanted.network_settings.vnet_name))
    for what, have, asked in checks:
        if have != asked:
            print(f"warning: compute {wanted.name} exists with {what} {have}, not {asked}; using it as it is",
                  file=sys.stderr)


def vm_size_facts(client: Any, vm_size: str) -> Any:
    """`vm_size` as the workspace's region offers it to compute clusters (the SDK's VmSize: vCPUs, GPUs, memory,
    family); a size the region does not offer is refused, with the closest one it does."""
    with azure_errors("listing the VM sizes of the workspace's region"):
        offered = {size.name.lower(): size for size in client.compute.list_sizes(compute_type="AmlCompute")}
    if vm_size.lower() not in offered:
        near = closest(vm_size.lower(), offered)
        raise UsageError(f"VM size {vm_size} is not offered to Azure ML compute clusters in the workspace's region"
                         + (f" (did you mean {offered[near].name}?)" if near else "")
                         + "; az ml compute list-sizes lists those it offers (--vm-size)")
    return offered[vm_size.lower()]


def size_fact(size: Any, attribute: str, service_key: str) -> Any:
    """One fact of a VmSize. azure-ai-ml 1.35 fills a VmSize from the service's reply under the service's own key
    names (vCPUs, memoryGB) and leaves its documented attributes (v_cp_us, memory_gb) None; either will do."""
    value = getattr(size, attribute, None)
    return value if value is not None else vars(size).get(service_key)


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
    cpus = (size_fact(size, "v_cp_us", "vCPUs") or 0) * instance_count
    if runners is not None and cpus and cpus_needed(job.config, runners) > cpus:
        raise UsageError(f"num_env_runners={runners} needs {cpus_needed(job.config, runners):g} CPUs (one per env "
                         f"runner plus one for the learner) and {instance_count} nodes of {size.name} have {cpus}; "
                         "lower num_workers in --config, or raise --instance-count, or pick a bigger --vm-size")


def submit(client: Any, job_spec: Any) -> Any:
    """Submit the job; the SDK uploads the code snapshot and registers the environment."""
    with azure_errors("submitting the job"):
        created = client.jobs.create_or_update(job_spec)
    print(f"submitted job {created.name}")
    print(f"studio: {created.studio_url}")
    return created


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
                      f"{reason.group(1) if reason else str(err).strip().splitlines()[0]}", file=sys.stderr)
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
