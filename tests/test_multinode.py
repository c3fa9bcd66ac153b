"""A real multi-node Ray cluster on this machine: a head and two more nodes, joined through --ray-address."""

from __future__ import annotations

import json
import secrets

import pytest

from conftest import run_cli, run_dirs
from pong_train.loggers import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_node_cluster():
    # Ray 2.60 clusters authenticate with a token; every node and the driver must share it.
    # One token per module: Ray keeps the first token it reads for the life of this process.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        from ray.cluster_utils import Cluster

        node_args = {"num_cpus": 1, "object_store_memory": 200 * 1024**2}
        cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        yield cluster
        cluster.shutdown()


def test_smoke_run_spreads_env_runners_over_nodes(three_node_cluster, storage):
    # Three 1-CPU nodes: the learner takes one, so the two env runners must land on the other two.
    proc = run_cli("--preset", "smoke", "--config", '{"num_workers": 2}', "--stop", '{"training_iteration": 3}',
                   "--ray-address", three_node_cluster.address, "--storage-path", str(storage), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    placement = json.loads((run_dir / "placement.json").read_text())
    nodes = {runner["node_id"] for runner in placement["env_runners"]}
    cluster_nodes = {node.node_id for node in three_node_cluster.list_all_nodes()}
    assert len(placement["env_runners"]) == 2
    assert len(nodes) == 2 and nodes <= cluster_nodes
    assert len(read_metrics(run_dir / "metrics.jsonl")) == 3


def test_too_many_env_runners_for_the_cluster_is_refused(three_node_cluster, storage):
    proc = run_cli("--preset", "smoke", "--config", '{"num_workers": 5}', "--ray-address", three_node_cluster.address,
                   "--storage-path", str(storage), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "needs 6 CPUs" in proc.stderr and "has 3" in proc.stderr
    assert run_dirs(storage) == []
