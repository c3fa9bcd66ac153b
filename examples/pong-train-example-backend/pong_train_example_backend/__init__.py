"""An example third-party pong-train backend: trains on this machine, and also writes each result to a CSV file."""

import csv
from pathlib import Path
from typing import Annotated

import click
from pydantic import BaseModel, ConfigDict, Field

from pong_train import hookimpl
from pong_train.errors import UsageError
from pong_train.job import JOB_FILE, Backend, Job, ResultLogger
from pong_train.plugin_options import Flag

NAME = "example"
CSV_FILE = "example-results.csv"
COLUMNS = ["training_iteration", "time_total_s", "timesteps_total", "episodes_total", "episode_reward_mean"]


class CsvLogger(ResultLogger):
    """One CSV row per result. A resumed run appends to the file of the run it continues."""

    def __init__(self, path):
        new = not path.exists()
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, COLUMNS, extrasaction="ignore")
        if new:
            self._writer.writeheader()

    def log_result(self, row):
        # Read the row, never change it: every logger is handed the same dict.
        # Until the first episode ends, episode_reward_mean is None (an empty cell) and episodes_total 0.
        self._writer.writerow(row)
        self._file.flush()

    def close(self):
        self._file.close()


@hookimpl
def pong_train_backends():
    return [Backend(NAME, "this machine, like local, plus a CSV file of results in the run directory")]


class ExampleOptions(BaseModel):
    """The backend's options: each field is one option of the training command, its docstring the help."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    csv_name: Annotated[str, Flag("--example-csv"), Field(pattern=r"^[\w.-]+\.csv$")] = CSV_FILE
    """Name of the CSV file the example backend writes in the run directory."""


@hookimpl
def pong_train_cli_options():
    return [ExampleOptions]


def csv_path(run_dir, job):
    # The job keeps a plugin's options under the plugin's entry-point name, by field name.
    return run_dir / ExampleOptions.model_validate(job.options.get(NAME, {})).csv_name


@hookimpl
def pong_train_cli_commands():
    @click.command("example-results")
    @click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
    def example_results(run_dir):
        """Print the last result the example backend wrote in RUN_DIR."""
        path = csv_path(run_dir, Job.load(run_dir / JOB_FILE))
        if not path.exists():
            raise UsageError(f"{run_dir}: no {path.name} here; was it trained with --backend {NAME}?")
        with open(path, newline="") as f:
            last = list(csv.DictReader(f))[-1:]
        click.echo(", ".join(f"{key} {value or '-'}" for key, value in (last[0] if last else {}).items()))

    return [example_results]


@hookimpl
def pong_train_launch(job, invocation):
    if job.backend != NAME:
        return None
    # Imported here, not at the top: discovering plugins stays fast for every command.
    from pong_train.training import run_training

    return run_training(job, invocation)  # also continues a run: --resume sets invocation.resume_dir


@hookimpl
def pong_train_result_loggers(run):
    if run.job.backend != NAME:
        return []
    return [CsvLogger(csv_path(run.run_dir, run.job))]
