"""An example third-party backend: runs the job on this machine and writes each result to results.csv."""

from __future__ import annotations

import csv
from typing import Any

import click

from pong_train import hookimpl
from pong_train.job import Backend, Job, ResultLogger, Run

NAME = "example"
COLUMNS = ["training_iteration", "time_total_s", "timesteps_total", "episodes_total", "episode_reward_mean"]


class CsvLogger(ResultLogger):
    """One CSV row per training result, with the article's metric names."""

    def __init__(self, path: Any, every: int) -> None:
        self.every = every
        self._file = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._file, COLUMNS, extrasaction="ignore")
        self._writer.writeheader()

    def log_result(self, row: dict[str, Any]) -> None:
        if row["training_iteration"] % self.every == 0:
            self._writer.writerow(row)
            self._file.flush()

    def close(self) -> None:
        self._file.close()


@hookimpl
def pong_train_backends() -> list[Backend]:
    return [Backend(NAME, "example third-party backend: trains here, results to results.csv")]


@hookimpl
def pong_train_cli_options() -> list[click.Option]:
    return [click.Option(["--example-every"], type=click.IntRange(min=1), default=1, show_default=True,
                         help="Write every Nth result to results.csv.")]


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
    return [CsvLogger(run.run_dir / "results.csv", run.job.options.get("example_every", 1))]
