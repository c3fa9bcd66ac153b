"""What a backend is handed: the job to run, the run it becomes, and the result-logger interface."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pong_train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Backend:
    """A backend a plugin provides, as listed by `pong-train backends` and offered by `--backend`."""

    name: str
    """The value of `--backend` that selects it."""
    description: str
    """One line for `pong-train backends` and `--help`."""


@dataclasses.dataclass
class Job:
    """One training request, validated and resolved, before any backend acts on it."""

    backend: str
    """Name of the backend chosen with `--backend`."""
    run: str
    """The RLlib algorithm (`--run`); IMPALA."""
    env: str
    """The ALE environment id (`--env`)."""
    config: TrainConfig
    """The resolved training settings (defaults < preset < config file < `--config`)."""
    stop: dict[str, float]
    """Stop criteria, metric name -> threshold; training stops when any one is reached."""
    storage_path: Path
    """Folder under which the run directory is created."""
    ray_address: str | None = None
    """Address of an existing Ray cluster to join; None starts an embedded one."""
    checkpoint_freq: int = 0
    """Checkpoint every this many training iterations (0: only at the end)."""
    checkpoint_keep: int = 3
    """How many of the latest checkpoints to keep."""
    name: str | None = None
    """Experiment name; the run directory is named after it."""
    dashboard: bool = False
    """Start Ray's dashboard (bound to localhost) with the embedded cluster."""
    debug: bool = False
    """Show tracebacks and Ray's own logs."""
    json_summary: bool = False
    """Print a JSON summary as the last line of output (`--json`)."""
    train_args: list[str] = dataclasses.field(default_factory=list)
    """The core training arguments exactly as given, for a backend that runs the entry point elsewhere."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Values of the command-line options that plugins added, by parameter name."""
    resume_dir: Path | None = None
    """A run directory to continue from its latest checkpoint (`pong-train --resume`)."""
    notes: list[str] = dataclasses.field(default_factory=list)
    """One line per translated legacy key, shown once the job has passed its checks."""
    hook: Any = dataclasses.field(default=None, repr=False, compare=False)
    """The plugin manager's hook relay (``pm.hook``), so code that runs the job can call hooks."""


@dataclasses.dataclass
class Run:
    """A job that has started training: where it writes and what it reports."""

    job: Job
    run_dir: Path
    """The run directory: `metrics.jsonl`, `run.json`, Tune's trial folder with checkpoints."""


class ResultLogger:
    """Receives every training result in the process that drives training.

    Backends return loggers from `pong_train_result_loggers`; observers may too.
    """

    def log_result(self, row: dict[str, Any]) -> None:
        """Called after every training iteration with the flattened result.

        `row` holds RLlib's result paths (`env_runners/episode_return_mean`, ...) and
        the article's names as aliases (`episode_reward_mean`, `episodes_total`,
        `timesteps_total`), plus `training_iteration` and `time_total_s`.
        """

    def close(self) -> None:
        """Called once when training ends, however it ends."""
