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
import time
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict

from pong_train import hookimpl
from pong_train.errors import UsageError
from pong_train.job import JOB_FILE, Job, ResultLogger, Run
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

    With MLFLOW_RUN_ID set (as inside an Azure ML job), it logs to that run; otherwise it starts a run named after
    the run directory in the given experiment. A trial of an experiment of several logs to a child run (named after
    the trial) of the experiment's run, which holds the shared params and, at the end, the curves of all trials.
    """

    def __init__(self, params: dict[str, Any], run_dir: Path, experiment: str | None = None,
                 parent: Optional["ExperimentRun"] = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.run_dir = run_dir
        self.parent = parent
        self.last: dict[str, Any] = {}
        self.best: float | None = None
        attached = os.environ.get("MLFLOW_RUN_ID") if parent is None else None
        self.run_id = attached or self.client.create_run(
            parent.experiment_id if parent else experiment_id(self.client, experiment), run_name=run_dir.name,
            tags={"mlflow.parentRunId": parent.run_id} if parent else {}).info.run_id
        log_params(self.client, self.run_id, params)

    def log_result(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        self.last = {name: row.get(name) for name in (*ARTICLE_NAMES, "training_iteration", "time_total_s")}
        value = row.get("episode_reward_mean")
        if value is not None:
            self.best = value if self.best is None else max(self.best, value)
        now, step = int(time.time() * 1000), int(row["training_iteration"])
        metrics = [
            Metric(name, float(value), now, step)
            for name, value in row.items()
            if (name in MLFLOW_METRICS or (name.startswith(MLFLOW_LOSS_PREFIX) and name.endswith("loss")))
            and isinstance(value, (int, float)) and math.isfinite(value)
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        try:
            self.log_artifacts()
        finally:
            self.client.set_terminated(self.run_id)
            if self.parent:
                self.parent.child_ended()

    def log_artifacts(self) -> None:
        if (self.run_dir / CURVE_FILE).exists():
            self.client.log_artifact(self.run_id, str(self.run_dir / CURVE_FILE))
        self.client.log_dict(self.run_id, {**self.last, "best_episode_reward_mean": self.best}, "summary.json")
        from pong_train.export import export_policy  # torch and RLlib: loaded once, at the end

        fmt = "onnx" if importlib.util.find_spec("onnx") else "torchscript"
        with tempfile.TemporaryDirectory() as folder:
            policy = Path(folder) / f"policy.{'onnx' if fmt == 'onnx' else 'pt'}"
            try:
                export_policy(self.run_dir, None, fmt, policy)
            except UsageError as err:  # a run stopped before its first checkpoint
                print(f"pong-train: note: no policy logged to MLflow: {err}", file=sys.stderr)
                return
            self.client.log_artifact(self.run_id, str(policy), artifact_path="policy")


class ExperimentRun:
    """The MLflow run of an experiment of several trials, their runs' parent: MLFLOW_RUN_ID's (inside an Azure ML
    job), or one this process starts, named after the run directory, and ends with its last trial's run, logging the
    curves of all trials."""

    def __init__(self, params: dict[str, Any], run_dir: Path, experiment: str | None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.run_dir = run_dir
        self.started = "MLFLOW_RUN_ID" not in os.environ
        self.run_id = os.environ.get("MLFLOW_RUN_ID") or self.client.create_run(
            experiment_id(self.client, experiment), run_name=run_dir.name).info.run_id
        self.experiment_id = self.client.get_run(self.run_id).info.experiment_id
        log_params(self.client, self.run_id, params)
        self.open_children = 0

    def child(self, params: dict[str, Any], trial_dir: Path) -> MlflowLogger:
        self.open_children += 1
        return MlflowLogger(params, trial_dir, parent=self)

    def child_ended(self) -> None:
        self.open_children -= 1
        if self.open_children == 0 and self.started:
            if (self.run_dir / CURVE_FILE).exists():
                self.client.log_artifact(self.run_id, str(self.run_dir / CURVE_FILE))
            self.client.set_terminated(self.run_id)


EXPERIMENT_RUNS: dict[Path, ExperimentRun] = {}
"""The experiment runs of this process, by run directory: each trial's logger is made on its own."""


def experiment_id(client: Any, name: str | None) -> str:
    """The id of the MLflow experiment `name` (made if new), or of MLflow's own default: MLFLOW_EXPERIMENT_ID,
    MLFLOW_EXPERIMENT_NAME, else Default."""
    if not name and os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items() if value is not None])


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
    if not run.trial:
        return [MlflowLogger(run_params(run), run.run_dir, options.experiment)]
    experiment_dir = run.run_dir.parent
    if experiment_dir not in EXPERIMENT_RUNS:
        experiment = Job.load(experiment_dir / JOB_FILE)  # the trial's job has its own settings, not the sweep
        EXPERIMENT_RUNS[experiment_dir] = ExperimentRun(
            {**run_params(Run(job=experiment, run_dir=experiment_dir)), "sweep": experiment.sweep.model_dump_json()},
            experiment_dir, options.experiment)
    return [EXPERIMENT_RUNS[experiment_dir].child(run_params(run), run.run_dir)]
