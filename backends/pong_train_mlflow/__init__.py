"""MLflow logging for any run: `--mlflow [URI]` sends params and every result to an MLflow tracking store.

The same logger records the azureml backend's runs in the cloud, so laptop and cluster runs carry the
same metric names and sit side by side in one MLflow UI.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict

from pong_train import hookimpl
from pong_train.errors import UsageError
from pong_train.job import ResultLogger, Run
from pong_train.loggers import MlflowLogger, run_params
from pong_train.plugin_options import Flag

PLUGIN = "mlflow"
"""The plugin's name (its entry point's): the job keeps its options as job.options[PLUGIN]."""

# What a bare `--mlflow` stands for: the store MLflow itself reads by default.
MLFLOW_DEFAULT = ""
INSTALL_HINT = "pip install 'pong-train[mlflow]'"


def tracking_uri(uri: str) -> str:
    """A plain folder becomes a file:// store; file stores need MLflow's explicit opt-in since 3.x."""
    if "://" not in uri:
        uri = "file://" + os.path.abspath(uri)
    if uri.startswith("file://"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def default_tracking_uri() -> str:
    """MLflow's own default store (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here), as an absolute URI."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return tracking_uri(uri)  # the user named this store, file store included
    if uri.startswith("file:"):
        # MLflow 3 falls back to ./mlruns when it already holds runs, and then refuses to open it.
        raise UsageError("--mlflow alone would log to ./mlruns, a file store MLflow 3 opens only with "
                         "MLFLOW_ALLOW_FILE_STORE=true; name the store: --mlflow ./mlruns, or "
                         "--mlflow sqlite:///mlflow.db")
    if uri.startswith("sqlite:") and not all(importlib.util.find_spec(m) for m in ("sqlalchemy", "alembic")):
        raise UsageError(f"--mlflow's default store ({uri}) needs SQLAlchemy and alembic: {INSTALL_HINT}")
    return uri


class MlflowOptions(BaseModel):
    """The plugin's options; each field one command-line option, its docstring the option's help."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    uri: Annotated[Optional[str], Flag("--mlflow", is_flag=False, flag_value=MLFLOW_DEFAULT, metavar="[URI]")] = None
    """Log params and every result to MLflow: to URI or folder, or alone to MLflow's default store
    (MLFLOW_TRACKING_URI, else ./mlflow.db), which mlflow.search_runs() and `mlflow ui` read from this folder."""
    experiment: Annotated[Optional[str], Flag("--mlflow-experiment", metavar="NAME")] = None
    """MLflow experiment for --mlflow [default: MLflow's own: MLFLOW_EXPERIMENT_NAME, else Default, the one a plain
    mlflow.search_runs() reads]."""


@hookimpl
def pong_train_cli_options() -> list[type[MlflowOptions]]:
    return [MlflowOptions]


@hookimpl
def pong_train_result_loggers(run: Run) -> list[ResultLogger]:
    options = MlflowOptions.model_validate(run.job.options.get(PLUGIN, {}))
    uri = options.uri
    if uri is None:
        return []
    try:
        import mlflow
    except ImportError:
        raise UsageError(f"--mlflow needs MLflow: {INSTALL_HINT}") from None
    mlflow.set_tracking_uri(tracking_uri(uri) if uri else default_tracking_uri())
    return [MlflowLogger(run_params(run), run.run_dir.name, options.experiment)]
