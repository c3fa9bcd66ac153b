"""The azureml backend: the same entry point on an Azure ML cluster, metrics to the job's run.

The Azure SDKs are imported inside the hooks, so discovery stays fast and works without them.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

import click

from pong_train import hookimpl
from pong_train.errors import UsageError
from pong_train.job import Backend, Invocation, Job
from pong_train_azureml.options import PLUGIN, AzureOptions, azure_options
from pong_train_azureml.sdk import require_sdk

NAME = PLUGIN


@hookimpl
def pong_train_backends() -> list[Backend]:
    return [Backend(NAME, "an Azure ML compute cluster: the same entry point, metrics to the job's run")]


@hookimpl
def pong_train_cli_options() -> list[type[AzureOptions]]:
    return [AzureOptions]


@hookimpl
def pong_train_cli_commands() -> list[click.Command]:
    from pong_train_azureml.commands import azureml_group

    return [azureml_group]


@hookimpl
def pong_train_launch(job: Job, invocation: Invocation) -> int | None:
    if job.backend != NAME:
        return None
    opts = azure_options(job.options)
    if opts.in_job:
        require_sdk("mlflow", "azureml.mlflow")
        from pong_train_azureml.in_job import run_in_job

        return run_in_job(job, opts, invocation)
    require_sdk("azure.ai.ml", "azure.identity", *(["azureml.core"] if opts.sdk == "v1" else []))
    from pong_train import progress
    from pong_train.rundir import make_run_dir
    from pong_train_azureml import service, spec

    vm_size = opts.vm_size_for(job.config.num_gpus_per_learner > 0)
    if opts.dry_run:
        spec.check_gpu(job, vm_size, opts.head_compute)
        progress.show_notes([*invocation.notes, spec.OFFLINE_CHECKS])
        run_dir = make_run_dir(job)
        written, _ = spec.write_dry_run(job, opts, invocation, vm_size, run_dir / "azureml")
        if opts.sdk == "v1":
            print(f"note: {spec.V1_NOTICE}", file=sys.stderr)
            print(f"v1 estimator run configuration: {written}")
            return 0
        workspace = f" --resource-group {opts.resource_group or '<resource-group>'} " \
                    f"--workspace-name {opts.workspace or '<workspace>'}"
        print(f"job spec: {written}")
        print(f"submit it with: az ml job create --file {written}{workspace}")
        return 0
    if opts.sdk == "v1":
        raise UsageError(f"{spec.V1_NOTICE}; use --dry-run to write its spec, or the default --azureml-sdk v2")
    with progress.step("connecting to the Azure ML workspace", quiet=invocation.quiet):
        client = service.ml_client(opts)
    return submit_and_follow(job, opts, invocation, client)


def submit_and_follow(job: Job, opts: Any, invocation: Invocation, client: Any) -> int:
    """Check the job against the workspace's compute and sizes, make sure the compute exists, submit, and follow the
    job unless --no-wait; a submit that fails leaves no run directory."""
    from pong_train import progress
    from pong_train.rundir import make_run_dir
    from pong_train_azureml import service, spec

    wanted = spec.compute_spec(opts, opts.vm_size_for(job.config.num_gpus_per_learner > 0))
    vm_size = service.ensure_compute(client, wanted, job, opts.instance_count)
    progress.show_notes(invocation.notes)
    run_dir = make_run_dir(job)
    try:
        _, command = spec.write_dry_run(job, opts, invocation, vm_size, run_dir / "azureml")
        with progress.step("uploading the source and submitting the job", quiet=invocation.quiet):
            created = service.submit(client, command)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # no job was made: nothing may look like one
        raise
    (run_dir / "azureml" / "job-name.txt").write_text(created.name + "\n")
    if opts.no_wait:
        return 0
    return service.follow(client, created.name)
