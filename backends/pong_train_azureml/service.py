"""Talking to Azure ML (SDK v2): the workspace client, the compute cluster, submitting and following a job."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Optional

from pong_train.errors import UsageError
from pong_train_azureml.options import AzureOptions

# Final job statuses and the exit code each maps to.
EXIT_CODES = {"Completed": 0, "Failed": 1, "Canceled": 130, "NotResponding": 1}


def ml_client(opts: AzureOptions, credential: Any = None, **client_kwargs: Any) -> Any:
    """The workspace client, from --subscription/--resource-group/--workspace or a config.json."""
    from azure.ai.ml import MLClient
    from azure.ai.ml.exceptions import ValidationException

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    named = (opts.subscription, opts.resource_group, opts.workspace)
    if all(named):
        return MLClient(credential, *named, **client_kwargs)
    if any(named):
        raise UsageError("give all three of --subscription, --resource-group and --workspace, or a config.json")
    config = opts.workspace_config or Path.cwd()
    if opts.workspace_config is not None and not opts.workspace_config.exists():
        raise UsageError(f"--workspace-config {opts.workspace_config} does not exist")
    try:
        return MLClient.from_config(credential, path=str(config), **client_kwargs)
    except ValidationException:
        raise UsageError(
            "no Azure ML workspace: put the workspace's config.json here (Azure ML studio > workspace > "
            "Download config file), or give --subscription, --resource-group and --workspace"
        ) from None


def ensure_compute(client: Any, wanted: Any) -> str:
    """Reuse the cluster if present (warning where it differs from what was asked), else create it.

    Returns the VM size the job will actually run on.
    """
    from azure.core.exceptions import ResourceNotFoundError

    try:
        existing = client.compute.get(wanted.name)
    except ResourceNotFoundError:
        print(f"creating compute cluster {wanted.name} ({wanted.size}, {wanted.min_instances}-"
              f"{wanted.max_instances} nodes)", file=sys.stderr)
        client.compute.begin_create_or_update(wanted).result()
        return wanted.size
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
    return existing.size


def submit(client: Any, job_spec: Any) -> Any:
    """Submit the job; the SDK uploads the code snapshot and registers the environment."""
    created = client.jobs.create_or_update(job_spec)
    print(f"submitted job {created.name}")
    print(f"studio: {created.studio_url}")
    return created


def follow(client: Any, name: str) -> int:
    """Stream status and logs until the job ends; the final status becomes the exit code."""
    from azure.ai.ml.exceptions import JobException

    try:
        client.jobs.stream(name)
    except JobException as err:
        reason = re.search(r'"message":\s*"([^"]+)"', str(err))
        print(f"pong-train: job {name} failed: {reason.group(1) if reason else str(err).strip().splitlines()[0]}",
              file=sys.stderr)
    status = job_status(client, name)
    print(f"job {name}: {status}")
    return EXIT_CODES.get(status, 1)


def job_status(client: Any, name: str) -> str:
    status = client.jobs.get(name).status
    return getattr(status, "value", status)


def cancel(client: Any, name: str) -> None:
    client.jobs.begin_cancel(name).result()


def download(client: Any, name: str, out: Optional[Path]) -> Path:
    target = out or Path("azureml-downloads") / name
    client.jobs.download(name, download_path=str(target), all=True)
    return target
