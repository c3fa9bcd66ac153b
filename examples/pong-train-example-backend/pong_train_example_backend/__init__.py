"""An example third-party pong-train backend: trains on this machine, and also writes each result to a CSV file."""

import csv

import click

from pong_train import hookimpl
from pong_train.job import Backend, ResultLogger

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


@hookimpl
def pong_train_cli_options():
    return [click.Option(["--example-csv"], default=CSV_FILE, show_default=True,
                         help="Name of the CSV file the example backend writes in the run directory.")]


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
    # The job keeps a plugin's options under the plugin's entry-point name, then by parameter name; a job saved
    # before the option existed lacks it.
    return [CsvLogger(run.run_dir / run.job.options.get("example", {}).get("example_csv", CSV_FILE))]
