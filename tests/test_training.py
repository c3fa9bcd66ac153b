"""Real training runs through the real entry point: Ray, RLlib, ALE and torch, nothing mocked."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_dirs
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
    assert last["episode_reward_mean"] == last["env_runners/episode_return_mean"] or any(
        row["env_runners/episode_return_mean"] == last["episode_reward_mean"] for row in rows)
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
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["config"]["num_env_runners"] == 1 and run_info["backend"] == "local"


def test_ale_v5_id_trains_too(storage):
    from conftest import run_cli

    proc = run_cli("--preset", "smoke", "--env", "ALE/Pong-v5", "--stop", '{"training_iteration": 2}',
                   "--storage-path", str(storage), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 2
