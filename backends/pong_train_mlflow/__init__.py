"""MLflow logging for any run: `--mlflow [URI]` sends params and every result to an MLflow tracking store.

The azureml backend switches this plugin on inside its jobs, where Azure ML points MLflow at the job's run, so
laptop and cluster runs carry the same metric names and sit side by side in one MLflow UI.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict

from pong_train import hookimpl
from pong_train.errors import UsageError
from pong_train.job import ResultLogger, Run
from pong_train.metrics import ARTICLE_NAMES, RESULT_PATHS
from pong_train.plugin_options import Flag
from pong_train.rundir import CURVE_FILE

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


# mlflow itself is imported only when a logger is made, so discovering the plugin stays fast.
# Each result sends the article's names, RLlib's result paths (the timing among them), and the learner's losses.
MLFLOW_METRICS = (*ARTICLE_NAMES, *RESULT_PATHS)
MLFLOW_LOSS_PREFIX = "learners/default_policy/"


class MlflowLogger(ResultLogger):
    """Logs params once and each result's metrics (step = training iteration) to one MLflow run, and at the end the
    run's artifacts: curve.png, summary.json and the policy exported from its best (else latest) checkpoint, from
    which Azure ML (or any MLflow registry) registers a model.

    With MLFLOW_RUN_ID set (as inside an Azure ML job), it attaches to that run; otherwise it starts
    a run named after the run directory in the given experiment.
    """

    def __init__(self, params: dict[str, Any], run_dir: Path, experiment: str | None = None) -> None:
        import mlflow

        self._mlflow = mlflow
        self.run_dir = run_dir
        self.last: dict[str, Any] = {}
        self.best: float | None = None
        run_id = os.environ.get("MLFLOW_RUN_ID")  # start_run() removes it from the environment
        if run_id is None and experiment:
            mlflow.set_experiment(experiment)
        self._run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_dir.name)
        mlflow.log_params({k: v for k, v in params.items() if v is not None})

    def log_result(self, row: dict[str, Any]) -> None:
        self.last = {name: row.get(name) for name in (*ARTICLE_NAMES, "training_iteration", "time_total_s")}
        value = row.get("episode_reward_mean")
        if value is not None:
            self.best = value if self.best is None else max(self.best, value)
        metrics = {
            name: float(value)
            for name, value in row.items()
            if (name in MLFLOW_METRICS or (name.startswith(MLFLOW_LOSS_PREFIX) and name.endswith("loss")))
            and isinstance(value, (int, float)) and math.isfinite(value)
        }
        self._mlflow.log_metrics(metrics, step=int(row["training_iteration"]))

    def close(self) -> None:
        try:
            self.log_artifacts()
        finally:
            self._mlflow.end_run()

    def log_artifacts(self) -> None:
        if (self.run_dir / CURVE_FILE).exists():
            self._mlflow.log_artifact(str(self.run_dir / CURVE_FILE))
        self._mlflow.log_dict({**self.last, "best_episode_reward_mean": self.best}, "summary.json")
        from pong_train.export import export_policy  # torch and RLlib: loaded once, at the end

        fmt = "onnx" if importlib.util.find_spec("onnx") else "torchscript"
        with tempfile.TemporaryDirectory() as folder:
            policy = Path(folder) / f"policy.{'onnx' if fmt == 'onnx' else 'pt'}"
            try:
                export_policy(self.run_dir, None, fmt, policy)
            except UsageError as err:  # a run stopped before its first checkpoint
                print(f"pong-train: note: no policy logged to MLflow: {err}", file=sys.stderr)
                return
            self._mlflow.log_artifact(str(policy), artifact_path="policy")


def run_params(run: Run) -> dict[str, Any]:
    """The run's identity and its whole training config, as MLflow params."""
    return {"run": run.job.run, "env": run.job.env, "backend": run.job.backend, **run.job.config.model_dump()}


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
    return [MlflowLogger(run_params(run), run.run_dir, options.experiment)]
