"""`pong-train azureml status|logs|cancel|download|resume JOB`: follow up on a submitted job."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from pong_train.plugin_options import declarations, validated
from pong_train_azureml.options import AzureOptions
from pong_train_azureml.sdk import require_sdk

WORKSPACE_FIELDS = ("workspace_config", "subscription", "resource_group", "workspace")


def with_workspace(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the backend's own workspace options (the same declarations as `--backend azureml` has)."""
    for _, decls, settings in reversed(declarations(AzureOptions, *WORKSPACE_FIELDS)):
        command = click.option(*decls, **settings)(command)
    return command


def client_for(**workspace: Any) -> tuple[Any, Any]:
    import pong_train_azureml.service as service

    require_sdk("azure.ai.ml", "azure.identity")
    return service, service.ml_client(validated(AzureOptions, workspace))


@click.group("azureml")
def azureml_group() -> None:
    """Follow up on jobs submitted with --backend azureml."""


@azureml_group.command()
@click.argument("job")
@with_workspace
def status(job: str, **workspace: Any) -> None:
    """Print the job's status."""
    service, client = client_for(**workspace)
    click.echo(service.job_status(client, job))


@azureml_group.command()
@click.argument("job")
@with_workspace
def logs(job: str, **workspace: Any) -> int:
    """Stream the job's logs until it ends; exit with its final status."""
    service, client = client_for(**workspace)
    return service.follow(client, job)


@azureml_group.command()
@click.argument("job")
@with_workspace
def cancel(job: str, **workspace: Any) -> None:
    """Cancel the job."""
    service, client = client_for(**workspace)
    service.cancel(client, job)
    click.echo(f"job {job}: cancel requested")


@azureml_group.command()
@click.argument("job")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Folder [default: azureml-downloads/JOB].")
@with_workspace
def download(job: str, output: Path | None, **workspace: Any) -> None:
    """Download the job's outputs and logs; the run directory is under named-outputs/runs."""
    service, client = client_for(**workspace)
    click.echo(f"downloaded to {service.download(client, job, output)}")


@azureml_group.command()
@click.argument("job")
@click.option("--no-wait", is_flag=True, help="Return once the new job is submitted.")
@click.option("--dry-run", is_flag=True, help="Print the new job's spec (job YAML) instead of submitting it.")
@with_workspace
def resume(job: str, no_wait: bool, dry_run: bool, **workspace: Any) -> int:
    """Continue a failed or cancelled job from its latest checkpoint, as a new job on the same run directory."""
    from pong_train_azureml.resume import resume_job

    _, client = client_for(**workspace)
    return resume_job(client, job, no_wait=no_wait, dry_run=dry_run)
