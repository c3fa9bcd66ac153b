"""The Ray launch: Azure ML starts Ray on every node; the command may run on all of them or on the head only.
The node that is Ray's head trains; any other waits for the end mark the head's driver leaves in Ray's KV store."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from pong_train.errors import first_line
from pong_train.job import Invocation, Job
from pong_train_azureml.nodes import (HEAD_RESOURCE, JOIN_TIMEOUT_S, POLL_S, JoinError, connected, gone, job_deadline,
                                      reachable, wait_for_nodes)

ENDED_POLL_S = 15.0
ENDED_KEY, ENDED_NAMESPACE = b"training-ended", "pong_train"


def locate_cluster() -> tuple[str, dict[str, str]]:
    """The cluster Azure ML started around this node, and ray.init's arguments that attach to this node's Ray node.

    The address is Ray's own choice for "auto" (RAY_ADDRESS, else what `ray start` recorded in this node's temp dir,
    else a GCS running here), resolved here: connecting to an explicit address never turns token authentication on,
    which Ray does for "auto" where it finds a token; Azure ML started the cluster and decided. A driver attaches to
    a Ray node of its own machine, preferring the head, so across machines only the head's driver attaches to the
    head; with several nodes on one machine the temp dir tells them apart, named when `ray start` recorded this
    very cluster there.
    """
    from ray._common.utils import get_default_ray_temp_dir
    from ray._private.services import canonicalize_bootstrap_address
    from ray._private.utils import read_ray_address

    temp_dir = get_default_ray_temp_dir()
    address = canonicalize_bootstrap_address("auto", temp_dir)  # ConnectionError until a Ray node runs here
    return address, {"_temp_dir": temp_dir} if read_ray_address(temp_dir) == address else {}


def find_cluster() -> tuple[str, dict[str, str], bool]:
    """Wait for the cluster; its address, how to attach to this node, and whether this node is its head."""
    import ray

    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        try:
            address, attach = locate_cluster()
            with connected(address, **attach):
                heads = {node["NodeID"] for node in ray.nodes() if node["Alive"] and HEAD_RESOURCE in node["Resources"]}
                return address, attach, ray.get_runtime_context().get_node_id() in heads
        except Exception as err:  # Ray raises several types while a node is still starting
            if time.monotonic() > deadline:
                raise JoinError(f"no Ray cluster of the job's answered on this node within {JOIN_TIMEOUT_S} s: "
                                f"{first_line(err)}") from None
            time.sleep(POLL_S)


def with_pong_train(runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """RAY_RUNTIME_ENV_HOOK: the driver's runtime_env, plus pong_train's package as a py_module for every worker."""
    import pong_train

    runtime_env = dict(runtime_env or {})
    runtime_env["py_modules"] = [*runtime_env.get("py_modules", []), str(Path(pong_train.__file__).parent)]
    return runtime_env


def ship_code() -> None:
    """Send pong_train with the driver's Ray job to the workers of every node.

    Azure ML may run the command, and with it `pip install .`, on the head only; the env runners elsewhere must still
    import pong_train. Ray calls the hook in whichever ray.init the core makes, which then uploads the package.
    """
    hook = f"{__name__}.{with_pong_train.__name__}"
    if os.environ.setdefault("RAY_RUNTIME_ENV_HOOK", hook) != hook:
        print("note: RAY_RUNTIME_ENV_HOOK is set already, so pong_train is not shipped to the other nodes; "
              "they need it installed", file=sys.stderr)


def ended(address: str, attach: dict[str, str], mark: bool = False) -> bool:
    """Whether the head's driver said training is over (with `mark`, say it). Never raises: the cluster may be gone."""
    from ray.experimental import internal_kv

    try:
        with connected(address, **attach):
            if mark:
                internal_kv._internal_kv_put(ENDED_KEY, b"1", namespace=ENDED_NAMESPACE)
            return bool(internal_kv._internal_kv_exists(ENDED_KEY, namespace=ENDED_NAMESPACE))
    except Exception:
        return False


def wait_for_the_end(address: str, attach: dict[str, str], deadline: float) -> int:
    """Not the head: lend this node until the head's driver says training ended, or the cluster goes."""
    host, port = address.rsplit(":", 1)
    print("note: this node is not the Ray head; it serves the job's cluster until training ends", file=sys.stderr)
    next_check = time.monotonic()
    while time.monotonic() < deadline and not gone(host, int(port)):
        if time.monotonic() >= next_check:
            if ended(address, attach):
                return 0
            next_check = time.monotonic() + ENDED_POLL_S
        time.sleep(POLL_S)
    return 0


def train_ray_launch(job: Job, invocation: Invocation, instance_count: int) -> int:
    from pong_train.training import run_training

    address, attach, is_head = find_cluster()
    if not is_head:
        return wait_for_the_end(address, attach, job_deadline(job))
    wait_for_nodes(address, instance_count, **attach)
    ship_code()
    try:
        return run_training(job, invocation.but(ray_address=address))
    finally:
        host, port = address.rsplit(":", 1)
        if reachable(host, int(port)):
            ended(address, attach, mark=True)
