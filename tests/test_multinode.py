"""A real multi-node Ray cluster on this machine: a head and two more nodes, joined through --ray-address."""

from __future__ import annotations

import json
import os

import pytest

from helpers import run_cli, run_dirs
from pong_train.loggers import read_metrics

pytestmark = pytest.mark.slow


def test_smoke_run_spreads_env_runners_over_nodes(three_node_cluster, storage):
    # Three 1-CPU nodes: the learner takes one, so the two env runners must land on the other two.
    proc = run_cli("--preset", "smoke", "--config", '{"num_workers": 2}', "--stop", '{"training_iteration": 3}',
                   "--ray-address", three_node_cluster["address"], "--storage-path", str(storage),
                   env=three_node_cluster["env"], timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    placement = json.loads((run_dir / "placement.json").read_text())
    nodes = {runner["node_id"] for runner in placement["env_runners"]}
    cluster_nodes = set(three_node_cluster["node_ids"])
    assert len(placement["env_runners"]) == 2
    assert len(nodes) == 2 and nodes <= cluster_nodes
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 3


def test_too_many_env_runners_for_the_cluster_is_refused(three_node_cluster, storage):
    proc = run_cli("--preset", "smoke", "--config", '{"num_workers": 5}', "--ray-address", three_node_cluster["address"],
                   "--storage-path", str(storage), env=three_node_cluster["env"], timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "needs 6 CPUs" in proc.stderr and "has 3" in proc.stderr
    assert run_dirs(storage) == []


def test_a_killed_node_leaves_the_run_going_on_what_remains(three_node_cluster, storage):
    """Documented behaviour: the env runner on the lost node is gone, training goes on with the other."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "pong_train", "--preset", "smoke", "--config", '{"num_workers": 2}',
         "--stop", '{"training_iteration": 10}', "--ray-address", three_node_cluster["address"],
         "--storage-path", str(storage)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **three_node_cluster["env"]})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        dirs = run_dirs(storage)
        if dirs and (dirs[0] / "metrics.jsonl").exists() and len(read_metrics(dirs[0] / "metrics.jsonl")) >= 3:
            break
        time.sleep(0.5)
    [run_dir] = run_dirs(storage)
    placement = json.loads((run_dir / "placement.json").read_text())
    spare = {three_node_cluster["head_node_id"], placement["learner_node_id"]}
    victim = next(r["node_id"] for r in placement["env_runners"] if r["node_id"] not in spare)
    three_node_cluster["remove_node"](victim)
    _, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["training_iteration"] for row in rows] == list(range(1, 11))
    assert rows[-1]["timesteps_total"] > rows[2]["timesteps_total"]  # sampling went on after the loss
