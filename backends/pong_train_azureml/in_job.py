"""Inside the Azure ML job: form (MPI) or find (Ray launch) the job's Ray cluster, train from one node, end on all."""

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
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pong_train.errors import UsageError
from pong_train.job import Job

if TYPE_CHECKING:
    from pong_train_azureml.options import AzureOptions

RAY_PORT = 6379  # the job's Ray head port, either launch; PONG_TRAIN_RAY_PORT overrides MPI's (ranks on one machine)
HEAD_RESOURCE = "node:__internal_head__"  # the resource Ray gives its head node, and no other
JOIN_TIMEOUT_S = 300  # the nodes of a job start minutes apart
NODES_TIMEOUT_S = 600
STOP_TIMEOUT_S = 30
POLL_S = 2.0
GONE_AFTER = 3  # probes in a row the head must miss to count as gone
ENDED_POLL_S = 15.0
ENDED_KEY, ENDED_NAMESPACE = b"training-ended", "pong_train"


class JoinError(UsageError):
    """This node could not take its part in the job's Ray cluster: one line on stderr, exit code 1."""

    exit_code = 1


def rank() -> int:
    """This process's MPI rank (Open MPI's variable, else the PMI one); 0 where none is set."""
    return int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))


def job_deadline(job: Job) -> float:
    """When Azure ML ends the job anyway (its time limit): what bounds every wait for the end of training."""
    from pong_train_azureml.options import parse_options
    from pong_train_azureml.spec import job_timeout

    return time.monotonic() + job_timeout(job, parse_options(job.options))


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


# --- MPI launch: rank 0 starts the Ray head and trains; the other ranks lend their node until the head goes.

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


def train_mpi(job: Job, instance_count: int) -> int:
    from pong_train.training import run_training

    agree_on_ray_auth()
    head = os.environ.get("AZ_BATCHAI_MPI_MASTER_NODE", "127.0.0.1")
    port = int(os.environ.get("PONG_TRAIN_RAY_PORT", RAY_PORT))
    if rank() != 0:
        return lend_node(head, port, job_deadline(job))
    node = RayNode("--head", f"--port={port}", "--include-dashboard=false")
    try:
        if not wait_for(lambda: not node.running() or reachable(head, port), JOIN_TIMEOUT_S) or not node.running():
            raise JoinError(f"rank 0 could not start the Ray head at {head}:{port}: {node.why()}")
        wait_for_nodes(f"{head}:{port}", instance_count)
        job.ray_address = f"{head}:{port}"
        return run_training(job)
    finally:
        node.stop()  # the other ranks see the head go, and leave


def lend_node(head: str, port: int, deadline: float) -> int:
    """A rank other than 0: join rank 0's cluster and stay until its head goes (training over, whatever its result)."""
    if not wait_for(lambda: reachable(head, port), JOIN_TIMEOUT_S):
        raise JoinError(f"rank {rank()}: no Ray head answered at {head}:{port} within {JOIN_TIMEOUT_S} s")
    from ray._common.utils import get_default_ray_temp_dir

    # This node's own temp dir, not the head's (Ray's default for a joining node): it may not exist here, and nodes
    # sharing a machine would race for the same socket names in it.
    node = RayNode(f"--address={head}:{port}", f"--temp-dir={get_default_ray_temp_dir()}")
    try:
        while time.monotonic() < deadline:
            if not node.running():
                if gone(head, port):
                    return 0
                raise JoinError(f"rank {rank()} could not stay in the Ray cluster at {head}:{port}: {node.why()}")
            if gone(head, port):
                return 0
            time.sleep(POLL_S)
        print(f"note: rank {rank()} stops waiting for the end of training: the job's time limit is up", file=sys.stderr)
        return 0
    finally:
        node.stop()


# --- Ray launch: Azure ML starts Ray on every node; the command may run on all of them or on the head only.

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
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise JoinError(f"no Ray cluster of the job's answered on this node within {JOIN_TIMEOUT_S} s: "
                                f"{first}") from None
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


def train_ray_launch(job: Job, instance_count: int) -> int:
    from pong_train.training import run_training

    address, attach, is_head = find_cluster()
    if not is_head:
        return wait_for_the_end(address, attach, job_deadline(job))
    wait_for_nodes(address, instance_count, **attach)
    ship_code()
    job.ray_address = address
    try:
        return run_training(job)
    finally:
        host, port = address.rsplit(":", 1)
        if reachable(host, int(port)):
            ended(address, attach, mark=True)


def run_in_job(job: Job, opts: AzureOptions) -> int:
    """The job's entry point on each node: exactly one node trains, on the cluster of the whole job; every node ends.

    Returns the training's status on the node that trains, 0 on the others once training is over.
    """
    if opts.runs_folder is not None:
        # The run directory goes under the mount point the command named; the recorded job (what `azureml resume`
        # continues) keeps none: a resumed job's mount point is its own, the run directory's parent.
        from pong_train_azureml.options import param_names

        param = param_names()["runs_folder"]
        job = job.model_copy(update={"storage_path": opts.runs_folder,
                                     "options": {k: v for k, v in job.options.items() if k != param}})
        earlier = earlier_attempt(opts.runs_folder)
        if earlier is not None:
            job = continued(job, earlier)
            if job is None:
                return 0
    return train_mpi(job, opts.instance_count) if opts.in_job == "mpi" else train_ray_launch(job, opts.instance_count)


def earlier_attempt(runs_folder: Path) -> Path | None:
    """The run directory an earlier attempt of this job left in its runs folder: Azure ML runs the same command
    again on new nodes when it restarts a job (a preempted low-priority node)."""
    from pong_train.job import JOB_FILE

    found = sorted(path.parent for path in runs_folder.glob(f"*/{JOB_FILE}"))
    return found[-1] if found else None


def continued(job: Job, run_dir: Path) -> Job | None:
    """`job` continuing the earlier attempt's run from its latest checkpoint, rather than starting over;
    None where that run already reached its stop criteria."""
    from pong_train.rundir import resumable_job, run_status

    if run_status(run_dir) == "completed":
        return None
    if rank() == 0:
        print(f"note: the job was restarted; continuing {run_dir.name} from its latest checkpoint", file=sys.stderr)
    earlier = resumable_job(run_dir, job.plugin_manager)
    return earlier.model_copy(update={"options": job.options, "quiet": job.quiet, "debug": job.debug})
