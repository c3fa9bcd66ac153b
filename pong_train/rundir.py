"""The run directory: created once per run, never reused; what the core writes there besides Tune's files."""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from pong_train import __version__
from pong_train.errors import UsageError
from pong_train.job import JOB_FILE, Job, Run
from pong_train.loggers import METRICS_FILE, read_metrics
from pong_train.metrics import reached
from pong_train.trials import trial_folder_name, trial_folders

RUN_FILE = "run.json"
"""How the run stands: pong-train's version, the status (running, completed, interrupted, failed,
lost-results) and the command line that started it."""
PLACEMENT_FILE = "placement.json"
CURVE_FILE = "curve.png"
BEST_CHECKPOINT = "best_checkpoint"
"""In each trial folder: a copy of the trial's checkpoint with the highest `episode_reward_mean`, kept whatever
Tune deletes (Tune keeps the latest `checkpoint_keep` checkpoints, and cannot keep those and the best as well)."""
BEST_FILE = "best.json"


def check_storage(storage_path: Path) -> None:
    """Refuse an unwritable storage path before anything starts (and before anything is written)."""
    existing = storage_path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--storage-path {storage_path}: {existing} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise UsageError(
            f"--storage-path {storage_path}: cannot write in {existing} ({err.strerror}); choose a folder you can write to"
        ) from None


def make_run_dir(job: Job) -> Path:
    """Create a new, uniquely named run directory; never reuses one."""
    base = job.name or f"{job.run}_{job.env.replace('/', '-')}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        job.storage_path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--storage-path {job.storage_path}: cannot create it ({err.strerror})") from None
    for attempt in range(1000):
        run_dir = job.storage_path / (f"{base}_{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir.resolve()
    raise UsageError(f"--storage-path {job.storage_path}: could not create a unique run directory")


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def record(run: Run, status: str) -> None:
    """Keep the job (`job.json`, what --resume reads) and how the run stands (`run.json`)."""
    run.job.save(run.run_dir / JOB_FILE)
    write_json(run.run_dir / RUN_FILE, {"pong_train_version": __version__, "status": status,
                                        "backend": run.job.backend, "argv": sys.argv[1:]})


def run_status(run_dir: Path) -> str | None:
    """The status run.json records (running, completed, ...); None where it cannot be read."""
    try:
        return json.loads((run_dir / RUN_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def resumable_job(run_dir: Path) -> Job:
    """The job of an earlier run, to continue from its latest checkpoint (with `Invocation.resume_dir`);
    refuses what cannot resume."""
    if not (run_dir / JOB_FILE).is_file():
        raise UsageError(f"--resume {run_dir}: not a pong-train run directory (no {JOB_FILE})")
    job = Job.load(run_dir / JOB_FILE)
    if run_status(run_dir) == "completed":
        raise UsageError(f"--resume {run_dir}: nothing to resume, the run already reached its stop criteria")
    return job.model_copy(update={"storage_path": run_dir.resolve().parent})


def summary(run: Run, status: str) -> dict[str, Any]:
    """The machine-readable end of a run (`--json`): where it is, how it ended, its last figures."""
    metrics = run.run_dir / METRICS_FILE
    rows = read_metrics(metrics) if metrics.exists() else []
    last = rows[-1] if rows else {}
    checkpoints = sorted(run.run_dir.glob("*/checkpoint_*"))
    keys = ("training_iteration", "episode_reward_mean", "episodes_total", "timesteps_total", "time_total_s")
    return {"status": status, "run_dir": str(run.run_dir),
            "checkpoint": str(checkpoints[-1]) if checkpoints else None, **{k: last.get(k) for k in keys}}


TRIALS_FILE = "trials.json"
"""An experiment's summary at the top of its run directory: each trial's settings, figures and end."""
TRIAL_FILE = "trial.json"
"""In each trial's folder: its line of trials.json and its whole settings."""


def trial_summary(run: Run, trial_dir: Path, settings: dict[str, Any], failed: bool) -> dict[str, Any]:
    """One trial's line of trials.json: the settings its sweep gave it, how it ended (completed: on a stop
    criterion; failed; stopped: interrupted, or by the scheduler; not started), its best and last
    episode_reward_mean, and the agent steps and time at its end."""
    rows = read_metrics(trial_dir / METRICS_FILE) if (trial_dir / METRICS_FILE).exists() else []
    means = [row["episode_reward_mean"] for row in rows if row.get("episode_reward_mean") is not None]
    last = rows[-1] if rows else {}
    status = ("failed" if failed else "completed" if rows and reached(run.job.stop, last)
              else "stopped" if trial_dir.exists() else "not started")
    return {"trial": trial_dir.name, "status": status, "settings": settings,
            "best_episode_reward_mean": max(means) if means else None,
            "last_episode_reward_mean": means[-1] if means else None,
            "timesteps_total": last.get("timesteps_total"), "time_total_s": last.get("time_total_s")}


def record_trials(run: Run, failed: set[str]) -> list[dict[str, Any]]:
    """trials.json (each trial's line), each trial's status in run.json, and in each trial's folder its line with its
    whole settings (trial.json); `failed`: the folders of the trials that failed. Returns the lines."""
    lines = []
    for index, (settings, job) in enumerate(zip(run.job.sweep.trials(), run.job.trials())):
        folder = run.run_dir / trial_folder_name(index)
        lines.append(trial_summary(run, folder, settings, folder.name in failed))
        if folder.is_dir():
            write_json(folder / TRIAL_FILE, {**lines[-1], "config": job.config.model_dump()})
    write_json(run.run_dir / TRIALS_FILE, lines)
    ended = json.loads((run.run_dir / RUN_FILE).read_text())
    write_json(run.run_dir / RUN_FILE, {**ended, "trials": {line["trial"]: line["status"] for line in lines}})
    return lines


def plot_curve(run_dir: Path) -> None:
    """curve.png from metrics.jsonl (every trial's, in an experiment of several); a failed plot warns, it never fails
    a finished run."""
    from pong_train.plotting import plot_runs

    if not (run_dir / METRICS_FILE).exists() and not trial_folders(run_dir):
        return
    try:
        print(f"learning curve: {plot_runs([run_dir], run_dir / CURVE_FILE)}")
    except Exception as err:
        print(f"warning: no learning curve plotted ({type(err).__name__}: {err})", file=sys.stderr)


class BestCheckpoint(BaseModel):
    """What `best_checkpoint/best.json` says of the checkpoint it is in."""

    checkpoint: str
    """The Tune checkpoint folder it was copied from (Tune may have deleted that one since)."""
    training_iteration: int
    episode_reward_mean: float
    timesteps_total: Optional[int] = None


def read_best(trial_dir: Path) -> Optional[BestCheckpoint]:
    """The trial's best checkpoint as its best.json describes it; None if it has none (yet)."""
    try:
        return BestCheckpoint.model_validate_json((trial_dir / BEST_CHECKPOINT / BEST_FILE).read_text())
    except (OSError, ValidationError):
        return None


def keep_if_best(trial_dir: Path, checkpoint: Path, result: dict[str, Any]) -> bool:
    """Copy `checkpoint` to the trial's best_checkpoint/ if its result's `episode_reward_mean` beats the best so far
    (there is none before the first episode ends); returns whether it did."""
    score = result.get("episode_reward_mean")
    if not isinstance(score, numbers.Real) or not math.isfinite(score) or not checkpoint.is_dir():
        return False
    best = read_best(trial_dir)
    if best is not None and score <= best.episode_reward_mean:
        return False
    new, old, kept = (trial_dir / f"{BEST_CHECKPOINT}{suffix}" for suffix in (".new", ".old", ""))
    steps = result.get("timesteps_total")
    try:
        for leftover in (new, old):
            shutil.rmtree(leftover, ignore_errors=True)
        # Checkpoint files are never rewritten, so hard links are a safe, free copy where the file system has them.
        shutil.copytree(checkpoint, new, copy_function=link_or_copy)
        (new / BEST_FILE).write_text(BestCheckpoint(
            checkpoint=checkpoint.name, training_iteration=result.get("training_iteration", 0),
            episode_reward_mean=score, timesteps_total=None if steps is None else int(steps)).model_dump_json(indent=2))
        if kept.exists():
            kept.rename(old)
        new.rename(kept)  # the folder and its best.json appear together
        shutil.rmtree(old, ignore_errors=True)
    except Exception as err:  # raised into Tune, it would leave the checkpoint unregistered: a warning instead
        print(f"pong-train: warning: best checkpoint not kept ({type(err).__name__}: {err})", file=sys.stderr)
        return False
    return True


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def best_checkpoint_keeper() -> Any:
    """A Tune callback keeping each trial's best checkpoint (`keep_if_best`). It holds no state: a resumed run gets it
    back from Tune's experiment state and goes on comparing with what best.json says."""
    from ray import tune

    class KeepBestCheckpoint(tune.Callback):
        def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
            # Tune saves right after a result and trains no further until it is saved: the last result is the
            # checkpoint's own.
            keep_if_best(Path(trial.path), Path(checkpoint.path), trial.last_result or {})

    return KeepBestCheckpoint()
