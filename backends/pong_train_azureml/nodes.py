"""What both launches of a job's nodes share: the Ray node a rank owns, probes of the head, bounded waits."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from pong_train.errors import NodeError
from pong_train.job import Job
from pong_train_azureml.options import azure_options, job_timeout

HEAD_RESOURCE = "node:__internal_head__"  # the resource Ray gives its head node, and no other
JOIN_TIMEOUT_S = 300  # the nodes of a job start minutes apart
NODES_TIMEOUT_S = 600
STOP_TIMEOUT_S = 30
POLL_S = 2.0
GONE_AFTER = 3  # probes in a row the head must miss to count as gone



class JoinError(NodeError):
    """This node could not take its part in the job's Ray cluster: one line on stderr, exit code 1."""


def rank() -> int:
    """This process's MPI rank (Open MPI's variable, else the PMI one); 0 where none is set."""
    return int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))


def job_deadline(job: Job) -> float:
    """When Azure ML ends the job anyway (its time limit): what bounds every wait for the end of training."""
    return time.monotonic() + job_timeout(job, azure_options(job.options))


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def gone(host: str, port: int) -> bool:
    """The head no longer answers: GONE_AFTER probes in a row, POLL_S apart, miss it."""
    for _ in range(GONE_AFTER):
        if reachable(host, port):
            return False
        time.sleep(POLL_S)
    return True


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


class RayNode:
    """A `ray start --block` this process owns, in a process group of its own with a shell that reaps it.

    The shell gets SIGTERM when this process ends, even by SIGKILL (mpirun aborting a job), and kills the whole group:
    a node's Ray never outlives its rank. Unlike `ray stop` it ends this node only, not every Ray on the machine, and
    skips Ray's graceful path, which hangs once the head is gone.
    """

    REAPER = 'trap "kill -KILL 0" TERM; "$@" & wait $!'

    def __init__(self, *args: str) -> None:
        prctl = ctypes.CDLL(None).prctl  # looked up before the fork: the child only calls it (1: PR_SET_PDEATHSIG)
        fd, log = tempfile.mkstemp(prefix="pong-train-ray-start-", suffix=".log")
        self.log = Path(log)
        with os.fdopen(fd, "w") as out:
            self.proc = subprocess.Popen(
                ["sh", "-c", self.REAPER, "sh", sys.executable, "-m", "ray.scripts.scripts", "start", *args, "--block"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: prctl(1, signal.SIGTERM))

    def running(self) -> bool:
        return self.proc.poll() is None

    def joined(self) -> bool:
        """Whether the node came up in the cluster: `ray start` says so once it has joined."""
        return "Ray runtime started" in self.log.read_text(errors="replace")

    def why(self) -> str:
        """Why the node ended: ray start's status and the last line it wrote."""
        if self.running():
            return f"no answer within {JOIN_TIMEOUT_S} s"
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        return f"ray start exited with status {self.proc.returncode}" + (f": {lines[-1]}" if lines else "")

    def stop(self) -> None:
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        try:  # what is left of the group, where ray start had ended first and left Ray's agents behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.unlink(missing_ok=True)


@contextmanager
def connected(address: str, **attach: Any) -> Iterator[None]:
    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **attach)
    try:
        yield
    finally:
        ray.shutdown()


def wait_for_nodes(address: str, expected: int, timeout_s: float = NODES_TIMEOUT_S, **attach: Any) -> None:
    """Wait until `expected` nodes have joined the cluster (the nodes of a job start at different times)."""
    import ray

    with connected(address, **attach):
        deadline = time.monotonic() + timeout_s
        while (alive := sum(1 for node in ray.nodes() if node["Alive"])) < expected and time.monotonic() < deadline:
            time.sleep(POLL_S)
    if alive < expected:
        print(f"warning: {alive} of {expected} nodes joined the Ray cluster; training on those", file=sys.stderr)
