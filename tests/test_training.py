"""Real training runs through the real entry point: Ray, RLlib, ALE and torch, nothing mocked."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_dirs
from pong_train import hookimpl
from pong_train.job import Job
from pong_train.loggers import read_metrics

pytestmark = pytest.mark.slow


def pong_train_script() -> str:
    return shutil.which("pong-train", path=str(Path(sys.executable).parent)) or "pong-train"


def test_smoke_run_writes_results_with_a_real_return(storage):
    """The issue's own check: the console script, the smoke preset and the article's flags."""
    proc = subprocess.run(
        [pong_train_script(), "--preset", "smoke", "--run", "IMPALA", "--env", "PongNoFrameskip-v4",
         "--config", '{"num_gpus": 0, "num_workers": 1}', "--storage-path", str(storage)],
        capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "num_workers=1 -> num_env_runners=1" in proc.stderr
    [run_dir] = run_dirs(storage)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert len(rows) >= 2
    last = rows[-1]
    assert math.isfinite(last["episode_reward_mean"]) and -21 <= last["episode_reward_mean"] <= 21
    assert last["episodes_total"] >= 1
    # The article's name is the mean of the last 100 episodes (here: all of them so far), whichever iterations
    # finished them, rebuilt from RLlib's per-iteration figures; None before the first episode ends.
    returns, episodes = 0.0, 0
    for row in rows:
        finished = row.get("env_runners/num_episodes") or 0
        if finished:
            returns += finished * row["env_runners/episode_return_mean"]
            episodes += finished
        assert row["episodes_total"] == episodes, row
        assert row["episode_reward_mean"] == (pytest.approx(returns / episodes) if episodes else None), row
    assert [row["training_iteration"] for row in rows] == list(range(1, len(rows) + 1))
    assert last["timesteps_total"] == last["env_runners/num_env_steps_sampled_lifetime"] > 0
    assert last["time_total_s"] > 0
    # The console shows one line per result.
    assert proc.stdout.count("episode_reward_mean") == len(rows)
    # Tune's files beside ours: params, progress, TensorBoard events, a checkpoint at the end.
    [trial] = [p for p in run_dir.iterdir() if p.is_dir()]
    assert (trial / "params.json").exists() and (trial / "progress.csv").exists()
    assert list(trial.glob("events.out.tfevents.*"))
    assert list(trial.glob("checkpoint_*/rllib_checkpoint.json"))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    job = Job.load(run_dir / "job.json")
    assert job.config.num_env_runners == 1 and job.backend == "local" and job.env == "PongNoFrameskip-v4"


class AlwaysDown:
    """An observer's logger whose tracking server never answers."""

    def log_result(self, row):
        raise ConnectionError("tracking server down")

    def close(self):
        pass


class DownObserver:
    """An observer plugin: a logger for every run, whatever its backend."""

    __name__ = "down-observer"

    @hookimpl
    def pong_train_result_loggers(self, run):
        return [AlwaysDown()]


def test_ale_v5_id_trains_and_lost_results_exit_3_keeping_everything_else(storage):
    """One run for two checks: an ALE/...-v5 id trains, and a logger that loses every result makes
    the run exit 3 ("lost-results") while metrics.jsonl and the checkpoint are kept."""
    from pong_train.cli import main
    from pong_train.plugins import get_plugin_manager

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(["--preset", "smoke", "--env", "ALE/Pong-v5", "--stop", '{"training_iteration": 2}',
                     "--storage-path", str(storage)],
                    plugin_manager=get_plugin_manager(extra_plugins=[DownObserver()]))
    stderr = err.getvalue()
    assert code == 3, stderr[-3000:]
    assert "Traceback" not in stderr
    [run_dir] = run_dirs(storage)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "lost-results"
    assert "results were lost: AlwaysDown (from plugin down-observer) lost 2" in stderr, stderr[-3000:]
    assert [row["training_iteration"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    assert list(run_dir.glob("*/checkpoint_*/rllib_checkpoint.json")), "the checkpoint of the run is kept"
    assert f"run directory: {run_dir}" in out.getvalue()
    assert Job.load(run_dir / "job.json").env == "ALE/Pong-v5"


def test_appo_smoke_run_trains_checkpoints_and_plays(storage):
    """--run APPO through the same pipeline: results with the article's names, APPO's learner stats, an lr
    schedule the learner follows, a checkpoint at the end that `evaluate` plays."""
    proc = subprocess.run(
        [pong_train_script(), "--preset", "smoke", "--run", "APPO", "--config",
         '{"num_gpus": 0, "lr": [[0, 0.003], [20000, 0.0003]]}', "--storage-path", str(storage)],
        capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    assert json.loads((run_dir / "job.json").read_text())["run"] == "APPO"
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert rows[-1]["episodes_total"] >= 1 and -21 <= rows[-1]["episode_reward_mean"] <= 21
    trained = [row for row in rows if row.get("learners/default_policy/mean_IS") is not None]
    assert trained and all(math.isfinite(row["learners/default_policy/mean_vf_loss"]) for row in trained)
    # The learner's lr falls along the schedule from one result to the next (the default would stay at 0.001).
    lrs = [row["learners/default_policy/default_optimizer_learning_rate"] for row in trained]
    assert len(lrs) >= 2 and all(a > b for a, b in zip(lrs, lrs[1:])) and 0.0003 <= lrs[-1] < lrs[0] <= 0.003, lrs
    # As a user types it: the run directory relative to where they are.
    played = subprocess.run([pong_train_script(), "evaluate", str(run_dir.relative_to(storage.parent)), "--episodes",
                             "1", "--seed", "1"], capture_output=True, text=True, timeout=300, cwd=storage.parent)
    assert played.returncode == 0, played.stderr[-3000:]
    assert "return" in played.stdout.lower()
