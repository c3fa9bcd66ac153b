"""What a backend is handed: the job to run, how this command runs it, the run it becomes, and the result-logger
interface."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pong_train.cluster import validate_address
from pong_train.config import TrainConfig, check_algorithm_keys
from pong_train.errors import UsageError, validation_line
from pong_train.metrics import validate_stop
from pong_train.trials import Sweep

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
JOB_FILE = "job.json"
FLAGS = {"backend": "--backend", "run": "--run", "env": "--env", "config": "--config", "stop": "--stop",
         "storage_path": "--storage-path", "checkpoint_freq": "--checkpoint-freq",
         "checkpoint_keep": "--checkpoint-keep", "name": "--name", "max_concurrent_trials": "--max-concurrent-trials",
         "scheduler": "--scheduler", "scheduler_grace_steps": "--scheduler-grace-steps"}
"""The command line's flag for each of the job's fields, which its errors name when the command line made it."""
"""The job as the run directory keeps it: what `--resume` and a remote backend read back (`--job FILE`)."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """A backend a plugin provides, as listed by `pong-train backends` and offered by `--backend`."""

    name: str
    """The value of `--backend` that selects it."""
    description: str
    """One line for `pong-train backends` and `--help`."""


class Job(BaseModel):
    """One training request, validated and resolved: what a run was asked to do.

    It crosses every boundary (run directory, resume, a cloud job) as one JSON file, written by
    `save` and read back by `load`, and gets the same checks however it arrives. How one command
    runs it (quiet, the Ray address, ...) is its `Invocation`, which is never saved.
    """

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    backend: str
    """Name of the backend chosen with `--backend`."""
    run: Literal["IMPALA", "APPO"] = "IMPALA"
    """The RLlib algorithm (`--run`)."""
    env: str = "PongNoFrameskip-v4"
    """The ALE environment id (`--env`)."""
    config: TrainConfig = Field(default_factory=TrainConfig)
    """The resolved training settings (defaults < preset < config file < `--config`); the core fills in
    `num_env_runners` from the cluster's CPUs when training starts."""
    stop: dict[str, float] = Field(default_factory=dict)
    """Stop criteria, metric name -> threshold; training stops when any one is reached."""
    storage_path: Path = Path("runs")
    """Folder under which the run directory is created."""
    checkpoint_freq: int = 0
    """Checkpoint every this many training iterations (0: only at the end)."""
    checkpoint_keep: int = 3
    """How many of the latest checkpoints to keep."""
    name: Optional[str] = None
    """Experiment name; the run directory is named after it."""
    sweep: Optional[Sweep] = None
    """The search spaces of an experiment of several trials (`--config` spaces, `--num-samples`), from which each
    trial's settings are drawn over `config`; None for a single trial."""
    max_concurrent_trials: Optional[int] = Field(default=None, ge=1)
    """Trials trained at once at most (`--max-concurrent-trials`); by default as many as the cluster's CPUs fit."""
    scheduler: Optional[Literal["asha"]] = None
    """Tune's trial scheduler (`--scheduler`): `asha` stops trials whose episode_reward_mean trails the others' at
    agent-step milestones (`scheduler_grace_steps`, then 3 times as many, ...); None trains every trial to its stop."""
    scheduler_grace_steps: int = Field(default=1_000_000, ge=1)
    """Agent steps every trial trains before the scheduler may stop it (`--scheduler-grace-steps`)."""
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """The options plugins added, by plugin name: as the plugin's options model validated them, by field name."""

    # The one place these rules are checked, however the job arrives (the command line, --job, --resume, a
    # cloud node); the error's one line names the field as its source gave it (`from_flags`, `load`).
    @field_validator("env")
    @classmethod
    def _known_env(cls, env: str) -> str:
        from pong_train.atari import validate_env_id  # the ALE registry: loaded to validate a job, not to import one

        return validate_env_id(env)

    @field_validator("name")
    @classmethod
    def _usable_as_a_folder_name(cls, name: Optional[str]) -> Optional[str]:
        return name if name is None else validate_run_name(name)

    @field_validator("stop", mode="before")
    @classmethod
    def _known_stop_metrics(cls, stop: Any) -> dict[str, float]:
        return validate_stop(stop)

    @model_validator(mode="after")
    def _settings_fit_the_algorithm(self) -> "Job":
        check_algorithm_keys(self.config, self.run)
        if self.scheduler and self.sweep is None:
            raise ValueError(f"--scheduler {self.scheduler} stops some trials early for others: it needs several "
                             "(search spaces in --config, or --num-samples 2 or more)")
        return self

    def trials(self) -> list["Job"]:
        """The job each trial trains, in trial order: this one with the trial's settings drawn from the sweep, and no
        sweep; [self] for a run of one trial."""
        if self.sweep is None:
            return [self]
        return [self.model_copy(update={"config": config, "sweep": None}) for config in self.sweep.configs(self.config)]

    def save(self, path: Path) -> Path:
        """Write the job as JSON (atomically: a crash never leaves half a file); returns `path`."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def from_flags(cls, fields: dict[str, Any], flags: Optional[dict[str, str]] = None) -> "Job":
        """The job the command line asks for; a value it refuses is a UsageError naming its flag (`FLAGS`, with
        `flags` laid over them for values that came from elsewhere, such as a config file's `stop`)."""
        given = {**FLAGS, **(flags or {})}
        try:
            return cls.model_validate(fields)
        except ValidationError as err:
            raise UsageError(validation_line(err, lambda loc: given.get(str(loc[0]), str(loc[0])) if loc
                                             else "")) from None

    @classmethod
    def load(cls, path: Path) -> "Job":
        """Read a job written by `save`; anything else is a UsageError naming the file."""
        try:
            return cls.model_validate_json(Path(path).read_text())
        except OSError as err:
            raise UsageError(f"{path}: cannot read the job file ({err.strerror})") from None
        except ValidationError as err:
            raise UsageError(f"{path}: {validation_message(err)}") from None


@dataclasses.dataclass(frozen=True)
class Invocation:
    """How one command runs a job, beside the job: never saved, never shipped to another machine.

    The command line makes it (`--ray-address`, `--quiet`, ...); a backend that trains the job
    elsewhere makes that machine's own (its Ray address, its flags).
    """

    plugin_manager: Any = None
    """The plugin manager (`pong_train.plugins.PluginManager`) of this command; None runs no plugin."""
    ray_address: Optional[str] = None
    """Address of an existing Ray cluster to join; None starts an embedded one."""
    dashboard: bool = False
    """Start Ray's dashboard (bound to localhost) with the embedded cluster."""
    debug: bool = False
    """Show tracebacks and Ray's own logs."""
    quiet: bool = False
    """`--quiet`: no progress and no per-result lines; errors and the summary only."""
    json_summary: bool = False
    """Print a JSON summary as the last line of output (`--json`)."""
    resume_dir: Optional[Path] = None
    """A run directory to continue from its latest checkpoint (`pong-train --resume`)."""
    notes: tuple[str, ...] = ()
    """One line per translated legacy key, shown once the job has passed its checks (by the backend
    that trains or submits it)."""

    def __post_init__(self) -> None:
        if self.ray_address is not None:
            validate_address(self.ray_address, field="--ray-address")

    def but(self, **changes: Any) -> "Invocation":
        """This invocation with `changes` (a backend's own Ray address, the run it resumes, ...)."""
        return dataclasses.replace(self, **changes)


def validate_run_name(name: str) -> str:
    """A name that can name the run directory, and a cloud backend's datastore folder after it."""
    if not RUN_NAME.fullmatch(name):
        raise ValueError(f"{name!r}: use 1-100 letters, digits, dots, underscores or hyphens, starting with a letter "
                         "or digit (it names the run directory)")
    return name


def validation_message(err: ValidationError) -> str:
    """The first error of a job that failed validation, as one line naming its field."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    if first["type"] == "json_invalid":
        return f"not a pong-train job file (not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')})"
    if first["type"] == "extra_forbidden":
        return f"{where}: not a field of a pong-train job"
    if first["type"] == "missing":
        return f"{where}: missing (a pong-train job file names at least its backend)"
    return validation_line(err, lambda loc: ".".join(str(p) for p in loc))


@dataclasses.dataclass
class Run:
    """A job that has started training: where it writes and what it reports."""

    job: Job
    """The job, with `config.num_env_runners` resolved."""
    run_dir: Path
    """The run directory: `job.json`, `run.json`, `metrics.jsonl`, `placement.json`, `curve.png`, and
    Tune's trial folder with the checkpoints."""
    invocation: Invocation = Invocation()
    """How this command runs it (`run.invocation.quiet`, ...)."""
    trial: str = ""
    """In an experiment of several trials, the trial this is (its folder's name, `run_dir` its folder, `job` its own:
    `Job.trials()`); "" for a run of one trial."""


class ResultLogger:
    """Receives every training result in the process that drives training.

    Backends return loggers from `pong_train_result_loggers`; observers may too. The core's own
    loggers (the console line and `metrics.jsonl`) run beside them whatever the backend.
    """

    def log_result(self, row: dict[str, Any]) -> None:
        """Called after every training iteration with the flattened result.

        `row` holds RLlib's result paths (`env_runners/episode_return_mean`: this iteration's episodes)
        and the article's names (`episode_reward_mean`: the last 100 episodes; `episodes_total`,
        `timesteps_total`), plus `training_iteration` and `time_total_s`. Before the first episode ends,
        `episode_reward_mean` is None and `episodes_total` is 0.
        """

    def close(self) -> None:
        """Called once when training ends, however it ends."""
