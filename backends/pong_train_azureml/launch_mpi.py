"""The MPI launch: rank 0 starts the Ray head and trains; the other ranks lend their node until the head goes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pong_train.job import Invocation, Job
from pong_train_azureml.nodes import (JOIN_TIMEOUT_S, POLL_S, JoinError, RayNode, gone, job_deadline, rank, reachable,
                                      wait_for, wait_for_nodes)
from pong_train_azureml.options import RAY_PORT

MASTER_NODE_VARIABLE = "AZ_BATCHAI_MPI_MASTER_NODE"  # Azure ML's address of rank 0's node in an MPI job


def agree_on_ray_auth() -> None:
    """MPI launch: make every rank's Ray agree on token authentication, from a token all the nodes already hold.

    Azure ML documents no secret that a job's nodes share (not that AZUREML_RUN_TOKEN is the same on each), and ranks
    have no safe channel to pass one. A token in the job's environment or image (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH,
    ~/.ray/auth_token) turns token authentication on for every rank: the head's `ray start` would do so by itself, a
    worker's never does. RAY_AUTH_MODE set for the job is kept. Without a token, Ray's default: none.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")  # Ray's order
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray._raylet" in sys.modules:  # Ray reads RAY_AUTH_MODE on import; this driver must see it too
            from ray._raylet import Config

            Config.initialize("")
    elif rank() == 0:
        print("note: the job's nodes share no Ray auth token, so its Ray cluster runs without token authentication "
              "(Ray's default), open to the compute cluster's network only", file=sys.stderr)


def train_mpi(job: Job, invocation: Invocation, instance_count: int) -> int:
    from pong_train.training import run_training

    head = os.environ.get(MASTER_NODE_VARIABLE)
    if head is None and instance_count > 1:
        # Without it every rank would look for rank 0's head on its own machine, and fail only after JOIN_TIMEOUT_S.
        raise JoinError(f"rank {rank()}: {MASTER_NODE_VARIABLE} is not set, so the ranks cannot find rank 0's Ray "
                        f"head; Azure ML sets it in MPI jobs of several nodes (this one asks for {instance_count})")
    head = head or "127.0.0.1"
    agree_on_ray_auth()
    port = int(os.environ.get("PONG_TRAIN_RAY_PORT", RAY_PORT))
    if rank() != 0:
        return lend_node(head, port, job_deadline(job))
    node = RayNode("--head", f"--port={port}", "--include-dashboard=false")
    try:
        if not wait_for(lambda: not node.running() or reachable(head, port), JOIN_TIMEOUT_S) or not node.running():
            raise JoinError(f"rank 0 could not start the Ray head at {head}:{port}: {node.why()}")
        wait_for_nodes(f"{head}:{port}", instance_count)
        return run_training(job, invocation.but(ray_address=f"{head}:{port}"))
    finally:
        node.stop()  # the other ranks see the head go, and leave


def lend_node(head: str, port: int, deadline: float) -> int:
    """A rank other than 0: join rank 0's cluster and stay until its head goes (training over, whatever its result).

    A node that never joins fails the rank. One that joined and then died leaves the rank waiting like the others:
    Ray trains on without the node, and a rank that exited non-zero would make mpirun end the training on rank 0.
    """
    if not wait_for(lambda: reachable(head, port), JOIN_TIMEOUT_S):
        raise JoinError(f"rank {rank()}: no Ray head answered at {head}:{port} within {JOIN_TIMEOUT_S} s")
    from ray._common.utils import get_default_ray_temp_dir

    # This node's own temp dir, not the head's (Ray's default for a joining node): it may not exist here, and nodes
    # sharing a machine would race for the same socket names in it.
    node = RayNode(f"--address={head}:{port}", f"--temp-dir={get_default_ray_temp_dir()}")
    try:
        lost = False
        while time.monotonic() < deadline:
            if gone(head, port):
                return 0
            if not lost and not node.running():
                if not node.joined():
                    raise JoinError(f"rank {rank()} could not join the Ray cluster at {head}:{port}: {node.why()}")
                print(f"warning: rank {rank()}: this node left the job's Ray cluster ({node.why()}); training goes on "
                      "with the other nodes, and this rank waits for its end", file=sys.stderr)
                lost = True
            time.sleep(POLL_S)
        print(f"note: rank {rank()} stops waiting for the end of training: the job's time limit is up", file=sys.stderr)
        return 0
    finally:
        node.stop()
