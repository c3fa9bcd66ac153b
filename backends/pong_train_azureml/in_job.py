"""Inside the Azure ML job: the command every node runs. It continues an earlier attempt's run where Azure ML
restarted the job, then forms (MPI, `launch_mpi`) or finds (Ray launch, `launch_ray`) the job's Ray cluster; one
node trains and every node ends."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pong_train.job import JOB_FILE, Invocation, Job
from pong_train.rundir import resumable_job, run_status
from pong_train_azureml.launch_mpi import train_mpi
from pong_train_azureml.launch_ray import train_ray_launch
from pong_train_azureml.nodes import rank
from pong_train_azureml.options import PLUGIN, AzureOptions


def run_in_job(job: Job, opts: AzureOptions, invocation: Invocation) -> int:
    """The job's entry point on each node: exactly one node trains, on the cluster of the whole job; every node ends.

    Returns the training's status on the node that trains, 0 on the others once training is over.
    """
    if opts.runs_folder is not None:
        # The run directory goes under the mount point the command named; the recorded job (what `azureml resume`
        # continues) keeps none: a resumed job's mount point is its own, the run directory's parent.
        recorded = opts.model_copy(update={"runs_folder": None}).model_dump(mode="json")
        job = job.model_copy(update={"storage_path": opts.runs_folder, "options": {**job.options, PLUGIN: recorded}})
        earlier = earlier_attempt(opts.runs_folder)
        if earlier is not None:
            job = continued(job, earlier)
            if job is None:
                return 0
            invocation = invocation.but(resume_dir=earlier.resolve())
    launch = train_mpi if opts.in_job == "mpi" else train_ray_launch
    return launch(with_mlflow(job), invocation, opts.instance_count)


def with_mlflow(job: Job) -> Job:
    """The job with the mlflow plugin switched on (`--mlflow`, MLflow's default store) where Azure ML pointed MLflow
    at the job's run (MLFLOW_TRACKING_URI), so every result lands in that run's metrics."""
    from pong_train_mlflow import MLFLOW_DEFAULT, PLUGIN as MLFLOW_PLUGIN

    if not os.environ.get("MLFLOW_TRACKING_URI") or job.options.get(MLFLOW_PLUGIN, {}).get("uri") is not None:
        return job
    switched_on = {**job.options.get(MLFLOW_PLUGIN, {}), "uri": MLFLOW_DEFAULT}
    return job.model_copy(update={"options": {**job.options, MLFLOW_PLUGIN: switched_on}})


def earlier_attempt(runs_folder: Path) -> Path | None:
    """The run directory an earlier attempt of this job left in its runs folder: Azure ML runs the same command
    again on new nodes when it restarts a job (a preempted low-priority node)."""
    found = sorted(path.parent for path in runs_folder.glob(f"*/{JOB_FILE}"))
    return found[-1] if found else None


def continued(job: Job, run_dir: Path) -> Job | None:
    """`job` continuing the earlier attempt's run from its latest checkpoint, rather than starting over;
    None where that run already reached its stop criteria."""
    if run_status(run_dir) == "completed":
        if rank() == 0:
            print(f"note: {run_dir.name} in this job's datastore folder already reached its stop criteria, so there "
                  "is nothing to train (a job.yaml submitted again continues its own run); to train anew, submit "
                  "with pong-train --backend azureml", file=sys.stderr)
        return None
    if rank() == 0:
        print(f"note: the job was restarted; continuing {run_dir.name} from its latest checkpoint", file=sys.stderr)
    return resumable_job(run_dir).model_copy(update={"options": job.options})
