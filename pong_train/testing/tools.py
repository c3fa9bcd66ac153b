"""Driving pong-train as a user does, for the tests of pong-train and of its plugins: the real entry point in a
subprocess, the run directories it leaves, its one-line errors, and a multi-node Ray cluster on this machine."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None):
    """`python -m pong_train ARGS` as a user would type it; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "pong_train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def run_dirs(storage: Path) -> list[Path]:
    return sorted(p for p in storage.iterdir() if p.is_dir()) if storage.exists() else []


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr naming every fragment, and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]
    return lines[0]


CLUSTER_SCRIPT = """
import json, sys
from ray.cluster_utils import Cluster
node_args = {"num_cpus": 1, "object_store_memory": 200 * 1024**2}
cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
for _ in range(2):
    cluster.add_node(**node_args)
cluster.wait_for_nodes()
nodes = {n.node_id: n for n in cluster.list_all_nodes()}
print(json.dumps({"address": cluster.address, "head_node_id": cluster.head_node.node_id,
                  "node_ids": list(nodes)}), flush=True)
for line in sys.stdin:  # "remove NODE_ID" kills that node's processes; end of input shuts the cluster down
    command, _, node_id = line.strip().partition(" ")
    if command == "remove" and node_id in nodes:
        cluster.remove_node(nodes.pop(node_id), allow_graceful=False)
        print("removed", flush=True)
cluster.shutdown()
"""


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """A folder for run directories (`--storage-path`), not yet made."""
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def three_node_cluster() -> Iterator[dict[str, Any]]:
    """Three Ray nodes on this machine, 1 CPU each, in their own process (Ray reads its auth settings once): their
    `address`, `head_node_id`, `node_ids`, the `env` a driver needs to join, and `remove_node(node_id)`."""
    # Ray 2.60 clusters authenticate with a token; every node and the driver must share it.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    def remove_node(node_id: str) -> None:
        proc.stdin.write(f"remove {node_id}\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "removed"

    try:
        info = json.loads(proc.stdout.readline())
        yield {**info, "env": {k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}, "remove_node": remove_node}
    finally:
        proc.stdin.close()
        proc.wait(timeout=120)


def wait_for_a_saved_checkpoint(storage: Path, since: float, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until Tune's experiment state (saved every 10 s at most) was written after a checkpoint made since `since`:
    what a restore continues from. Killed before that, an attempt's work since its last saved state is redone."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no checkpoint in Tune's experiment state within {timeout_s} s"
        made = [p.stat().st_mtime for p in storage.glob("*/*/checkpoint_*") if p.stat().st_mtime > since]
        states = [p.stat().st_mtime for p in storage.glob("*/experiment_state-*.json")]
        if made and states and max(states) > min(made):
            return
        time.sleep(0.5)
