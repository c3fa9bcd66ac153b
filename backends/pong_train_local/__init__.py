"""The local backend: trains in this process on an embedded or given Ray cluster; metrics to console and metrics.jsonl."""

from __future__ import annotations

from pong_train import hookimpl
from pong_train.job import Backend, Job, ResultLogger, Run
from pong_train.loggers import METRICS_FILE, ConsoleLogger, JsonlLogger

NAME = "local"


@hookimpl
def pong_train_backends() -> list[Backend]:
    return [Backend(NAME, "this machine: an embedded Ray cluster, or the one given by --ray-address")]


@hookimpl
def pong_train_launch(job: Job) -> int | None:
    if job.backend != NAME:
        return None
    from pong_train.training import run_training

    return run_training(job)


@hookimpl
def pong_train_result_loggers(run: Run) -> list[ResultLogger]:
    if run.job.backend != NAME:
        return []
    from pong_train import progress

    console = [] if progress.quiet else [ConsoleLogger(run.job.stop)]
    return [*console, JsonlLogger(run.run_dir / METRICS_FILE)]
