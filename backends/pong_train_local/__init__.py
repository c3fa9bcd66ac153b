"""The local backend: trains in this process, on an embedded Ray cluster or the one given by --ray-address.

Its runs' metrics go where the core sends every run's: a console line per result and `metrics.jsonl`.
"""

from __future__ import annotations

from pong_train import hookimpl
from pong_train.job import Backend, Invocation, Job

NAME = "local"


@hookimpl
def pong_train_backends() -> list[Backend]:
    return [Backend(NAME, "this machine: an embedded Ray cluster, or the one given by --ray-address")]


@hookimpl
def pong_train_launch(job: Job, invocation: Invocation) -> int | None:
    if job.backend != NAME:
        return None
    from pong_train.training import run_training

    return run_training(job, invocation)
