"""The azureml backend on the job's nodes: a real `mpirun` of the MPI launch and a real two-node Ray cluster for the
Ray launch, every node on this machine, each with its own Ray temp dir, as Azure ML gives each its own VM."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pong_train.testing.tools import run_dirs, wait_for_a_saved_checkpoint

MPIRUN = shutil.which("mpirun")
# CI installs Open MPI (.ci/run); only a machine without apt, where that cannot be done, skips the mpirun tests.
needs_mpirun = pytest.mark.skipif(MPIRUN is None and shutil.which("apt-get") is None,
                                  reason="Open MPI's mpirun is missing and there is no apt-get to install it with")

SHARED_TOKEN = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_args(launch: str, instance_count: int, storage: Path, stop: dict | None = None,
              config: dict | None = None, **job_fields) -> list[str]:
    """The arguments of the command the job's nodes run (spec.in_job_command, past its `pip install .`), on the job
    file the submitting side uploads (spec.node_job, written beside `storage`): the smoke preset, `stop` and `config`
    over it (and any other Job field given); the runs output's mount point is `storage`."""
    from pong_train.config import PRESETS, TrainConfig
    from pong_train.job import Job
    from pong_train_azureml.options import RUNS_FOLDER_FLAG, azure_options
    from pong_train_azureml.spec import node_job

    smoke = PRESETS["smoke"]
    job = Job(backend="azureml", config=TrainConfig(**{**smoke["config"], **(config or {})}),
              stop=stop or smoke["stop"], options={"azureml": {"launch": launch, "instance_count": instance_count}},
              **job_fields)
    job_file = node_job(job, azure_options(job.options)).save(storage.parent / f"job-{launch}.json")
    return ["--job", str(job_file), RUNS_FOLDER_FLAG, str(storage)]


def in_job(launch: str, instance_count: int, storage: Path, **settings) -> list[str]:
    return [sys.executable, "-m", "pong_train", *node_args(launch, instance_count, storage, **settings)]


def job_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a job's node: MLflow pointed at a local store, as Azure ML points it at the job's run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "OMPI_", "PMI_")) and k != "RANK"}
    return {**env, "MLFLOW_TRACKING_URI": f"file://{tmp_path / 'mlruns'}", "MLFLOW_ALLOW_FILE_STORE": "true", **extra}


def live_processes_of(marker: str) -> list[str]:
    """Live processes whose environment holds `marker`: every process of a Ray node inherits its RAY_TMPDIR."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append(proc.name + " " + (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:80])
        except OSError:
            continue
    return found


def assert_nothing_left(marker: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while (left := live_processes_of(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, left


@pytest.fixture
def ray_tmp():
    """A short temp root (Ray's socket paths must stay under 108 characters) that no other test's Ray uses."""
    path = tempfile.mkdtemp(prefix="pt-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_runs_folder_the_command_names_holds_the_run_directory(tmp_path, monkeypatch):
    """Azure ML resolves the runs output's mount point in the command only: the nodes take it from there, and the job
    they record (what `azureml resume` continues, on a mount point of its own) names none."""
    from pong_train.job import Invocation, Job
    from pong_train_azureml import in_job as role
    from pong_train_azureml.options import azure_options

    started = []
    monkeypatch.setattr(role, "train_ray_launch", lambda job, invocation, count: started.append((job, count)) or 0)
    args = node_args("ray", 2, tmp_path / "mounted")
    job = Job.load(Path(args[1]))
    job.options["azureml"]["runs_folder"] = args[3]  # as the core lays the command's options over the file's
    assert role.run_in_job(job, azure_options(job.options), Invocation()) == 0
    [(trained, instance_count)] = started
    assert trained.storage_path == tmp_path / "mounted" and instance_count == 2
    assert trained.options["azureml"]["runs_folder"] is None and trained.options["azureml"]["in_job"] == "ray"


# --- MPI launch: three ranks under a real mpirun.

def mpi_job(tmp_path: Path, ray_tmp: str, settings: dict | None = None, **env: str) -> tuple[list[str], dict]:
    """`mpirun -np 3` of the in-job command, each rank with its own Ray temp dir (ray_tmp/RANK), each reporting its
    own exit; the command and its environment."""
    if MPIRUN is None:
        pytest.fail("Open MPI is missing: apt-get install -y openmpi-bin (.ci/run does)")
    rank_shell = ('RAY_TMPDIR="$NODES/$OMPI_COMM_WORLD_RANK" "$@"; status=$?; '
                  'echo "rank $OMPI_COMM_WORLD_RANK exited $status"; exit $status')
    command = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "3", "sh", "-c", rank_shell, "sh",
               *in_job("mpi", 3, tmp_path / "runs", **(settings or {}))]
    nodes = {"NODES": ray_tmp, "AZ_BATCHAI_MPI_MASTER_NODE": "127.0.0.1", "PONG_TRAIN_RAY_PORT": str(free_port())}
    return command, job_env(tmp_path, **nodes, **env)


def run_mpi(tmp_path: Path, ray_tmp: str, settings: dict | None = None, **env: str) -> subprocess.CompletedProcess:
    command, job_environment = mpi_job(tmp_path, ray_tmp, settings, **env)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=420, cwd=tmp_path, env=job_environment)
    finally:
        assert_nothing_left(ray_tmp)


@needs_mpirun
@pytest.mark.slow
def test_mpi_every_rank_exits_once_training_is_done(tmp_path, ray_tmp):
    proc = run_mpi(tmp_path, ray_tmp, {"stop": {"training_iteration": 1}}, RAY_AUTH_TOKEN=SHARED_TOKEN)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("rank ")) == [
        "rank 0 exited 0", "rank 1 exited 0", "rank 2 exited 0"]
    [run_dir] = run_dirs(tmp_path / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert SHARED_TOKEN not in out
    assert not any(SHARED_TOKEN.encode() in f.read_bytes() for f in run_dir.rglob("*") if f.is_file())


@needs_mpirun
@pytest.mark.slow
def test_mpi_every_rank_exits_when_training_fails_and_the_job_has_its_status(tmp_path, ray_tmp):
    # The cluster forms (3 nodes, 2 CPUs each), then training refuses to start: 51 CPUs asked for.
    home = tmp_path / "home"  # no ~/.ray/auth_token: nothing to derive a token from
    home.mkdir()
    proc = run_mpi(tmp_path, ray_tmp, {"config": {"num_env_runners": 50}}, HOME=str(home))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "rank 0 exited 2" in proc.stdout
    assert "needs 51 CPUs" in proc.stderr and "the Ray cluster has 6" in proc.stderr
    assert proc.stderr.count("no Ray auth token") == 1  # said once, by rank 0
    assert run_dirs(tmp_path / "runs") == []


def pids_of(marker: str, name: str | None = None) -> list[int]:
    """The live processes of the Ray node whose RAY_TMPDIR is `marker` (only those called `name`)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"RAY_TMPDIR={marker}\0".encode() in (proc / "environ").read_bytes() and (
                    name is None or (proc / "comm").read_text().strip() == name):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@needs_mpirun
@pytest.mark.slow
def test_mpi_a_worker_ranks_ray_node_dying_leaves_training_to_finish(tmp_path, ray_tmp):
    """Ray trains on without a lost node (test_multinode); so does the MPI job: the rank whose node died waits for the
    end like the others, instead of exiting 1, which would make mpirun end the training on rank 0."""
    from pong_train.loggers import read_metrics

    command, env = mpi_job(tmp_path, ray_tmp, {"stop": {"training_iteration": 12}, "config": {"num_env_runners": 2}})
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        deadline, placement = time.monotonic() + 300, None
        while placement is None and time.monotonic() < deadline and proc.poll() is None:
            dirs = run_dirs(tmp_path / "runs")
            if dirs and (dirs[0] / "placement.json").exists() and len(read_metrics(dirs[0] / "metrics.jsonl")) >= 3:
                placement = json.loads((dirs[0] / "placement.json").read_text())
            time.sleep(0.5)
        assert placement is not None, "training never got going"
        # A worker rank whose node does not hold the learner: its raylet dies, as when a machine is lost.
        victim = next(rank for rank in ("1", "2") if placement["learner_pid"] not in pids_of(f"{ray_tmp}/{rank}"))
        raylets = pids_of(f"{ray_tmp}/{victim}", "raylet")
        assert raylets, f"no raylet of rank {victim}"
        for pid in raylets:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        assert_nothing_left(ray_tmp)
    assert proc.returncode == 0, (out + err)[-3000:]
    assert sorted(line for line in out.splitlines() if line.startswith("rank ")) == [
        "rank 0 exited 0", "rank 1 exited 0", "rank 2 exited 0"]
    assert f"warning: rank {victim}: this node left the job's Ray cluster" in err
    [run_dir] = run_dirs(tmp_path / "runs")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert [row["training_iteration"] for row in read_metrics(run_dir / "metrics.jsonl")] == list(range(1, 13))


# --- Nodes started by hand, as Azure ML starts them (RayDistribution) and as a rank that cannot join meets them.

class RayNodes:
    """`ray start --block` processes, each in its own process group, so that stopping them ends all of theirs."""

    def __init__(self, ray_tmp: str, env: dict[str, str]) -> None:
        self.ray_tmp, self.env, self.procs = ray_tmp, env, []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start(self, name: str, *args: str, wait: bool = True) -> str:
        """Start node `name` (its RAY_TMPDIR is ray_tmp/name); returns that temp root."""
        root = os.path.join(self.ray_tmp, name)
        command = [sys.executable, "-m", "ray.scripts.scripts", "start", *args, f"--temp-dir={root}/ray", "--block"]
        env = {**self.env, "RAY_TMPDIR": root, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        node = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(node)
        deadline = time.monotonic() + 120
        while wait and not os.path.exists(f"{root}/ray/ray_current_cluster"):  # written once the node runs
            assert node.poll() is None and time.monotonic() < deadline, f"ray start of {name} failed"
            time.sleep(0.5)
        return root

    def stop(self) -> None:
        for node in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(node.pid, sig)
                    node.wait(20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


@pytest.mark.slow
def test_a_rank_that_cannot_join_exits_non_zero_with_one_line(tmp_path, ray_tmp):
    nodes = RayNodes(ray_tmp, job_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=SHARED_TOKEN))
    try:
        nodes.start("head", "--head", f"--port={nodes.port}", "--num-cpus=1", "--include-dashboard=false")
        # Rank 1 holds no token for the head's cluster: its `ray start` is refused.
        env = job_env(tmp_path, OMPI_COMM_WORLD_RANK="1", AZ_BATCHAI_MPI_MASTER_NODE="127.0.0.1",
                      PONG_TRAIN_RAY_PORT=str(nodes.port), RAY_AUTH_MODE="disabled", RAY_TMPDIR=f"{ray_tmp}/rank1")
        proc = subprocess.run(in_job("mpi", 2, tmp_path / "runs"), capture_output=True, text=True, timeout=300,
                              cwd=tmp_path, env=env)
    finally:
        nodes.stop()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and f"rank 1 could not join the Ray cluster at {nodes.address}" in lines[0], lines
    assert "Traceback" not in proc.stderr and SHARED_TOKEN not in proc.stderr
    assert_nothing_left(ray_tmp)


@pytest.mark.slow
@pytest.mark.parametrize("rank", ["0", "1"])
def test_an_mpi_job_of_several_nodes_without_the_master_node_address_fails_at_once(tmp_path, rank):
    """Without Azure ML's master-node variable a rank would look for rank 0 on its own machine and fail only after
    minutes of waiting: one line at once instead, before any Ray node starts."""
    started = time.monotonic()
    proc = subprocess.run(in_job("mpi", 2, tmp_path / "runs"), capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=job_env(tmp_path, OMPI_COMM_WORLD_RANK=rank))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert f"rank {rank}: AZ_BATCHAI_MPI_MASTER_NODE is not set" in lines[0] and "2" in lines[0]
    assert time.monotonic() - started < 60 and not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def azure_ray_cluster(tmp_path_factory):
    """Three nodes as Azure ML's Ray launch leaves them: a head and two workers, token auth set in the nodes'
    environment."""
    tmp = tmp_path_factory.mktemp("azure-ray")
    ray_tmp = tempfile.mkdtemp(prefix="pt-", dir="/tmp")
    nodes = RayNodes(ray_tmp, job_env(tmp, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=SHARED_TOKEN))
    try:
        head = nodes.start("head", "--head", f"--port={nodes.port}", "--num-cpus=2", "--include-dashboard=false")
        workers = [nodes.start(name, f"--address={nodes.address}", "--num-cpus=1") for name in ("worker", "worker2")]
        yield {"address": nodes.address, "head": head, "workers": workers,
               "env": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": SHARED_TOKEN}}
    finally:
        nodes.stop()
        assert_nothing_left(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_ray_launch_on_every_node_of_three_trains_once_and_every_node_ends(azure_ray_cluster, tmp_path):
    """The command on all three nodes, no RANK on the head, misleading ones on the workers: the head alone trains."""
    command = in_job("ray", 3, tmp_path / "runs", stop={"training_iteration": 1})
    env = job_env(tmp_path, **azure_ray_cluster["env"])
    workers = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**env, "RAY_TMPDIR": root, "RANK": "0", "OMPI_COMM_WORLD_RANK": "0"})
               for root in azure_ray_cluster["workers"]]
    try:
        head = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                              env={**env, "RAY_TMPDIR": azure_ray_cluster["head"]})
        ended_at = time.monotonic()
        worker_errs = [worker.communicate(timeout=90)[1] for worker in workers]  # the head's end is polled every 15 s
    finally:
        for worker in workers:
            worker.kill()
    assert head.returncode == 0, head.stderr[-3000:]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-3000:] for err in worker_errs]
    assert time.monotonic() - ended_at < 60
    assert all("not the Ray head" in err for err in worker_errs) and "not the Ray head" not in head.stderr
    [run_dir] = run_dirs(tmp_path / "runs")  # one driver, one run
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["training_iteration"] for row in rows] == [1]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert SHARED_TOKEN not in head.stdout + head.stderr + "".join(worker_errs)
    # The same job.yaml submitted again runs the same command on the same datastore folder: it says why it trains
    # nothing, rather than exiting 0 in silence.
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already reached its stop criteria" in again.stderr and "pong-train --backend azureml" in again.stderr
    assert run_dirs(tmp_path / "runs") == [run_dir] and len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1


def wait_for_iterations(runs: Path, count: int, proc: subprocess.Popen, timeout_s: float = 300) -> list[int]:
    """The training_iteration of every row in the run's metrics.jsonl, once it has `count` more than at the start."""
    def iterations() -> list[int]:
        found = list(runs.glob("*/metrics.jsonl"))
        return [json.loads(line)["training_iteration"] for line in found[0].read_text().splitlines()] if found else []

    target = len(iterations()) + count
    deadline = time.monotonic() + timeout_s
    while len(iterations()) < target:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"fewer than {count} new results in {timeout_s} s"
        time.sleep(0.5)
    return iterations()


@pytest.mark.slow
def test_a_killed_job_continues_when_restarted_and_when_resumed(azure_ray_cluster, tmp_path):
    """Preemption, then `azureml resume`, for real: the job's command killed after some results, run again as Azure
    ML does when it restarts a job, killed again, then the command `pong-train azureml resume` submits."""
    from pong_train_azureml.resume import resume_command
    from pong_train_azureml.spec import IN_JOB_STORAGE, INSTALL_SOURCE

    runs = tmp_path / "runs"
    command = in_job("ray", 3, runs, stop={"training_iteration": 20}, checkpoint_freq=1)
    env = {**job_env(tmp_path, **azure_ray_cluster["env"]), "RAY_TMPDIR": azure_ray_cluster["head"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    consoles = []
    for _attempt in range(2):  # the first attempt, and Azure ML's restart of the same command
        driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
        started = time.time()
        wait_for_iterations(runs, 3, driver)
        wait_for_a_saved_checkpoint(runs, started, driver)
        driver.send_signal(signal.SIGKILL)  # the node is gone: no checkpoint on the way out
        consoles.append(driver.communicate(timeout=30)[0])
    resumed = resume_command().replace(INSTALL_SOURCE, "true").replace(shlex.quote(IN_JOB_STORAGE),
                                                                                 shlex.quote(str(runs)))
    proc = subprocess.run(["bash", "-c", resumed], cwd=tmp_path, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(runs)  # every attempt wrote to the first one's run directory
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["training_iteration"] for row in rows] == list(range(1, 21))
    # The restart and the resumed job each took over from a checkpoint (their first result is not iteration 1).
    firsts = [int(re.search(r"^iter\s+(\d+)\s", out, flags=re.M).group(1)) for out in [*consoles, proc.stdout]]
    assert firsts[0] == 1 and firsts[1] > 1 and firsts[2] > firsts[1], firsts
    steps = [row["timesteps_total"] for row in rows]
    assert steps == sorted(steps)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


SHIPPED = """
import json, sys, ray
from pong_train_azureml.launch_ray import ship_code
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ship_code()
ray.init(address=sys.argv[1], log_to_driver=False)
here = ray.get_runtime_context().get_node_id()
other = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here)
where = ray.remote(lambda: __import__("pong_train").__file__).options(
    scheduling_strategy=NodeAffinitySchedulingStrategy(other, soft=False))
shipped = ray.get_runtime_context().runtime_env["py_modules"]
print(json.dumps({"worker": ray.get(where.remote()), "py_modules": shipped}))
"""


@pytest.mark.slow
def test_ray_launch_ships_pong_train_to_the_other_nodes(azure_ray_cluster, tmp_path):
    """Where Azure ML runs the command (and its pip install) on the head only, the worker's tasks still import the
    pong_train the driver uploaded with its job, not one installed on their node."""
    import pong_train

    env = {**job_env(tmp_path, **azure_ray_cluster["env"]), "RAY_TMPDIR": azure_ray_cluster["head"]}
    proc = subprocess.run([sys.executable, "-c", SHIPPED, azure_ray_cluster["address"]], capture_output=True,
                          text=True, timeout=180, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [uri.startswith("gcs://") for uri in shipped["py_modules"]] == [True]
    # Under a worker node's own runtime resources:
    assert any(Path(shipped["worker"]).is_relative_to(root) for root in azure_ray_cluster["workers"])
    assert Path(pong_train.__file__).parent != Path(shipped["worker"]).parent
