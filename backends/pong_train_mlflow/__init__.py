"""MLflow logging for any run: `--mlflow [URI]` sends params and every result to an MLflow tracking store.

The same logger records the azureml backend's runs in the cloud, so laptop and cluster runs carry the
same metric names and sit side by side in one MLflow UI.
"""

from __future__ import annotations

import math
import os
from typing import Any

import click

from pong_train import hookimpl
from pong_train.errors import UsageError
from pong_train.job import ResultLogger, Run
from pong_train.metrics import ALIASES

DEFAULT_URI = "./mlruns"
# Each result sends the article's names, RLlib's paths for them, the timing, and the learner's losses.
LOGGED_METRICS = (*ALIASES, *ALIASES.values(), "training_iteration", "time_total_s")
LOSS_PREFIX = "learners/default_policy/"


class MlflowLogger(ResultLogger):
    """Logs params once and each result's metrics (step = training iteration) to one MLflow run.

    With MLFLOW_RUN_ID set (as inside an Azure ML job), it attaches to that run; otherwise it starts
    a run named after the run directory in the given experiment.
    """

    def __init__(self, params: dict[str, Any], run_name: str, experiment: str | None = None) -> None:
        import mlflow

        self._mlflow = mlflow
        run_id = os.environ.get("MLFLOW_RUN_ID")  # start_run() removes it from the environment
        if run_id is None and experiment:
            mlflow.set_experiment(experiment)
        self._run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        mlflow.log_params({k: v for k, v in params.items() if v is not None})

    def log_result(self, row: dict[str, Any]) -> None:
        metrics = {
            name: float(value)
            for name, value in row.items()
            if (name in LOGGED_METRICS or (name.startswith(LOSS_PREFIX) and name.endswith("loss")))
            and isinstance(value, (int, float)) and math.isfinite(value)
        }
        self._mlflow.log_metrics(metrics, step=int(row["training_iteration"]))

    def close(self) -> None:
        self._mlflow.end_run()


def run_params(run: Run) -> dict[str, Any]:
    return {"run": run.job.run, "env": run.job.env, "backend": run.job.backend, **run.job.config.model_dump()}


def tracking_uri(uri: str) -> str:
    """A plain folder becomes a file:// store; file stores need MLflow's explicit opt-in since 3.x."""
    if "://" not in uri:
        uri = "file://" + os.path.abspath(uri)
    if uri.startswith("file://"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


@hookimpl
def pong_train_cli_options() -> list[click.Option]:
    return [
        click.Option(["--mlflow"], is_flag=False, flag_value=DEFAULT_URI, default=None, metavar="[URI]",
                     help=f"Log params and every result to MLflow (URI or folder; alone: {DEFAULT_URI})."),
        click.Option(["--mlflow-experiment"], default="pong-train", show_default=True,
                     help="MLflow experiment for --mlflow."),
    ]


@hookimpl
def pong_train_result_loggers(run: Run) -> list[ResultLogger]:
    uri = run.job.options.get("mlflow")
    if not uri:
        return []
    try:
        import mlflow
    except ImportError:
        raise UsageError("--mlflow needs MLflow: pip install 'pong-train[mlflow]'") from None
    mlflow.set_tracking_uri(tracking_uri(uri))
    return [MlflowLogger(run_params(run), run.run_dir.name, run.job.options.get("mlflow_experiment"))]
