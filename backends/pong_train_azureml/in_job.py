"""Inside the Azure ML job: join (or, for MPI, start) the job's Ray cluster, and log metrics to the job's run."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import subprocess
import sys
import time

from pong_train.errors import UsageError
from pong_train.job import Job

RAY_PORT = 6379
NODES_TIMEOUT_S = 600


def rank() -> int:
    """This node's rank: Open MPI's variable in MPI jobs, 0 where none is set."""
    return int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0")))


def share_ray_token() -> None:
    """Give every node of the job the same Ray auth token, derived from a secret the job's nodes share.

    Azure ML hands each node of a run the run's own token; hashing it keeps that token out of Ray.
    Nothing is written to the job spec, logs or metrics.
    """
    run_secret = os.environ.get("AZUREML_RUN_TOKEN")
    if os.environ.get("RAY_AUTH_TOKEN") or not run_secret:
        return
    digest = hashlib.sha256(f"pong-train-ray:{os.environ.get('AZUREML_RUN_ID', '')}:{run_secret}".encode())
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = digest.hexdigest()


def ray_start(*args: str) -> None:
    subprocess.run(["ray", "start", *args], check=True, stdout=subprocess.DEVNULL)


def mpi_bootstrap() -> str | None:
    """MPI launch: rank 0 starts the Ray head and drives training; the others join it and stay until it goes.

    Returns the head's address on rank 0, None on the other ranks once the head is gone.
    """
    head = os.environ.get("AZ_BATCHAI_MPI_MASTER_NODE", "127.0.0.1")
    if rank() == 0:
        ray_start("--head", f"--port={RAY_PORT}", "--include-dashboard=false")
        return f"127.0.0.1:{RAY_PORT}"
    for _ in range(60):  # the head may still be starting
        if subprocess.run(["ray", "start", f"--address={head}:{RAY_PORT}"], stdout=subprocess.DEVNULL).returncode == 0:
            break
        time.sleep(5)
    else:
        raise UsageError(f"rank {rank()} could not join the Ray head at {head}:{RAY_PORT} within 5 minutes")
    while head_reachable(head):
        time.sleep(10)
    subprocess.run(["ray", "stop"], stdout=subprocess.DEVNULL)
    return None


def head_reachable(head: str) -> bool:
    try:
        with socket.create_connection((head, RAY_PORT), timeout=5):
            return True
    except OSError:
        return False


def wait_for_nodes(address: str, expected: int, timeout_s: float = NODES_TIMEOUT_S) -> int:
    """Wait until `expected` nodes have joined the cluster (nodes of a job start at different times)."""
    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = sum(1 for node in ray.nodes() if node["Alive"])
            if alive >= expected or time.monotonic() > deadline:
                return alive
            time.sleep(2)
    finally:
        ray.shutdown()


def run_in_job(job: Job, launch: str, instance_count: int) -> int:
    """The job's entry point on each node: only rank 0 trains, on the cluster of the whole job."""
    from pong_train.training import run_training

    share_ray_token()
    if launch == "mpi":
        address = mpi_bootstrap()
        if address is None:
            return 0
    else:
        if rank() != 0:  # Azure ML runs Ray on every node; one driver is enough
            return 0
        address = os.environ.get("RAY_ADDRESS", "auto")
    alive = wait_for_nodes(address, instance_count)
    if alive < instance_count:
        print(f"warning: {alive} of {instance_count} nodes joined the Ray cluster; training on those",
              file=sys.stderr)
    job.ray_address = address
    return run_training(job)
