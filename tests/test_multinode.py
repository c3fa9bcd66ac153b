"""A real multi-node Ray cluster on this machine: a head and two more nodes, joined through --ray-address."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, run_dirs
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
