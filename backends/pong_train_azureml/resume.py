"""`pong-train azureml resume JOB`: a new job that continues a stopped one from the run directory it left behind."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from pong_train.errors import UsageError
from pong_train_azureml.failures import azure_errors
from pong_train_azureml.service import follow, submit
from pong_train_azureml.spec import IN_JOB_STORAGE, INSTALL_SOURCE, RUNS_OUTPUT, runs_output

# The statuses of a job that stopped short of its stop criteria (a Completed job reached them).
RESUMABLE = ("Failed", "Canceled", "NotResponding")
RESUMED = " (resumed)"


def resume_command() -> str:
    """The new job's command: the entry point's --resume on the run directory in the mounted datastore folder.

    Everything else (the launch, the node count, the training settings) is in that run's job.json.
    """
    # The first job named its run directory itself; that directory is the only one in the folder.
    find_run_dir = f"set -- {shlex.quote(IN_JOB_STORAGE)}/*/"
    return f'{INSTALL_SOURCE} && {find_run_dir} && python -m pong_train --resume "$1"'


def resume_spec(old: Any, name: str) -> Any:
    """The same code, environment, compute, nodes and datastore folder as job `name` (`old`), resuming its run."""
    from azure.ai.ml import command

    runs = (old.outputs or {}).get(RUNS_OUTPUT)
    if runs is None or not getattr(runs, "path", None):
        raise UsageError(f"job {name} keeps no run directory in a datastore (an output named '{RUNS_OUTPUT}'); "
                         "only jobs submitted by this version of pong-train can be resumed")
    return command(
        code=old.code,
        environment=old.environment,
        compute=old.compute,
        command=resume_command(),
        instance_count=old.resources.instance_count,
        shm_size=old.resources.shm_size,
        timeout=old.limits.timeout if old.limits else None,
        distribution=old.distribution,
        outputs={RUNS_OUTPUT: runs_output(runs.path)},
        experiment_name=old.experiment_name,
        display_name=(old.display_name or name).removesuffix(RESUMED) + RESUMED,
        tags={**(old.tags or {}), "pong_train.resumed_from": name},
        environment_variables=old.environment_variables,
    )


def resume_job(client: Any, name: str, no_wait: bool = False, dry_run: bool = False) -> int:
    """Submit the job that resumes `name` (or print its spec), and follow it unless no_wait; the exit status."""
    with azure_errors(f"job {name}"):
        old = client.jobs.get(name)
    status = getattr(old.status, "value", old.status)
    if status not in RESUMABLE:
        reason = "it reached its stop criteria" if status == "Completed" else "wait for it to end, or cancel it"
        raise UsageError(f"job {name} is {status}; only a failed or cancelled job can be resumed ({reason})")
    spec = resume_spec(old, name)
    if dry_run:
        spec._to_job().dump(sys.stdout)
        return 0
    created = submit(client, spec)
    return 0 if no_wait else follow(client, created.name)
