"""`pong-train azureml status|logs|cancel|download JOB`: follow up on a submitted job."""

from __future__ import annotations

from pathlib import Path

import click

from pong_train_azureml.options import parse_options

workspace_options = [
    click.option("--workspace-config", type=click.Path(path_type=Path), help="Workspace config.json."),
    click.option("--subscription"),
    click.option("--resource-group"),
    click.option("--workspace"),
]


def with_workspace(command):
    for option in reversed(workspace_options):
        command = option(command)
    return command


def client_for(**workspace):
    from pong_train_azureml import require_sdk, service

    require_sdk("azure.ai.ml", "azure.identity")
    defaults = {
        "dry_run": False, "no_wait": False, "azureml_launch": "ray", "azureml_sdk": "v2", "experiment": "",
        "display_name": None, "tags": (), "compute": "", "vm_size": None, "instance_count": 1,
        "min_instances": 0, "max_instances": None, "idle_seconds": 1800, "low_priority": False, "vnet": None,
        "subnet": "default", "image": None, "shm_size": "16g", "timeout": None, "env_vars": (),
        "azureml_in_job": None,
    }
    return service, service.ml_client(parse_options({**defaults, **workspace}))


@click.group("azureml")
def azureml_group() -> None:
    """Follow up on jobs submitted with --backend azureml."""


@azureml_group.command()
@click.argument("job")
@with_workspace
def status(job: str, **workspace) -> None:
    """Print the job's status."""
    service, client = client_for(**workspace)
    click.echo(service.job_status(client, job))


@azureml_group.command()
@click.argument("job")
@with_workspace
def logs(job: str, **workspace) -> int:
    """Stream the job's logs until it ends; exit with its final status."""
    service, client = client_for(**workspace)
    return service.follow(client, job)


@azureml_group.command()
@click.argument("job")
@with_workspace
def cancel(job: str, **workspace) -> None:
    """Cancel the job."""
    service, client = client_for(**workspace)
    service.cancel(client, job)
    click.echo(f"job {job}: cancel requested")


@azureml_group.command()
@click.argument("job")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Folder [default: azureml-downloads/JOB].")
@with_workspace
def download(job: str, output: Path | None, **workspace) -> None:
    """Download the job's outputs and logs (metrics.jsonl and checkpoints are under outputs/runs)."""
    service, client = client_for(**workspace)
    click.echo(f"downloaded to {service.download(client, job, output)}")
