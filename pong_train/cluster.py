"""The Ray cluster a run trains on: join the given one or start an embedded one, and check it can place the job."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys

from pong_train.config import TrainConfig, check_gpus
from pong_train.errors import UsageError, first_line

MIN_SHARED_MEMORY = 1 << 30


def validate_address(address: str, field: str = "--ray-address") -> tuple[str, int] | None:
    """HOST:PORT of a Ray cluster (None for 'auto'); anything else is refused, naming `field`."""
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
        raise UsageError(f"{field} '{address}' is not HOST:PORT (for example 127.0.0.1:6379) or 'auto'")
    return host, int(port)


def check_address_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A quick TCP probe, so an unreachable --ray-address fails in seconds, not after Ray's long retries."""
    endpoint = validate_address(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            pass
    except (OSError, UnicodeError, ValueError) as err:
        raise UsageError(
            f"--ray-address {address}: no Ray cluster answers there ({err.strerror or err}); "
            "start one with `ray start --head` or leave --ray-address out to use an embedded cluster"
        ) from None


def check_local_gpus(config: TrainConfig) -> None:
    """Before an embedded cluster starts: the GPU the learner asks for must be on this machine."""
    if config.num_gpus_per_learner > 0:
        import torch

        check_gpus(config, torch.cuda.device_count(), "this machine (CUDA)")


def connect(address: str | None, debug: bool = False, dashboard: bool = False, num_cpus: int | None = None) -> None:
    """Join the cluster at `address`, or start an embedded one with `num_cpus` (default: this machine's)."""
    import ray

    quiet = dict(logging_level=logging.DEBUG if debug else logging.ERROR, log_to_driver=debug)
    if not debug:
        for name in ("ray", "ray.rllib"):  # RLlib sets its own level on import
            logging.getLogger(name).setLevel(logging.ERROR)
        # A failed trial's traceback: its error.txt keeps it, and the run's end says it in one line.
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    if address:
        check_address_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except Exception as err:  # Ray raises several types for a refused join
            raise UsageError(f"--ray-address {address}: cannot join the Ray cluster: {first_line(err)}") from None
        return
    warn_small_shared_memory()
    # Ray starts its workers at nice 15: anything else on the machine then starves the emulators.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=dashboard,
             dashboard_host="127.0.0.1", **quiet)


def warn_small_shared_memory(path: str = "/dev/shm") -> None:
    """Ray's object store lives in /dev/shm; containers often get 64 MiB, and Ray then falls back to disk."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return
    if free < MIN_SHARED_MEMORY:
        print(f"warning: {path} has only {free >> 20} MiB free; Ray's object store falls back to disk, which is "
              "slower (in Docker, start the container with --shm-size=2g or more)", file=sys.stderr)


def cpus_needed(config: TrainConfig, num_env_runners: int) -> float:
    """CPUs one trial reserves: the algorithm's own process plus env runners and learners."""
    return 1 + num_env_runners * config.num_cpus_per_env_runner + config.num_learners


def fit_to_cluster(config: TrainConfig) -> TrainConfig:
    """The config with `num_env_runners` (one per spare CPU when unset) and `num_emulator_threads` resolved, once the
    cluster can place it.

    Refuses a job the cluster cannot place, instead of letting Tune wait for resources forever.
    """
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    check_gpus(config, gpus, "the Ray cluster")
    runners = config.num_env_runners
    if runners is None:
        spare = cpus - 1 - config.num_learners
        runners = max(1, int(spare // config.num_cpus_per_env_runner))
    need_cpus = cpus_needed(config, runners)
    if need_cpus > cpus:
        raise UsageError(
            f"num_env_runners={runners} needs {need_cpus:g} CPUs (one per env runner plus one for the learner) "
            f"but the Ray cluster has {cpus:g}; lower num_workers in --config or join a bigger cluster with --ray-address"
        )
    threads = config.num_emulator_threads or emulator_threads(cpus, runners)
    return config.model_copy(update={"num_env_runners": runners, "num_emulator_threads": threads})


def emulator_threads(cpus: float, env_runners: int) -> int:
    """Emulator threads per env runner where the config leaves them unset: the CPUs per env runner, at most 2 (the
    second uses what the learner leaves of its core)."""
    return min(2, max(1, int(cpus // max(1, env_runners))))


def trials_plan(configs: list[TrainConfig], max_concurrent: int | None) -> str:
    """One line saying how the trials of an experiment (their configs fitted) share the cluster: how many train at
    once, by their CPUs and `max_concurrent`; the others queue, as Tune queues them."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    needs = [cpus_needed(config, config.num_env_runners or 0) for config in configs]
    at_once = next((count for count in range(len(needs), 0, -1) if sum(sorted(needs)[:count]) <= cpus), 1)
    at_once = min(at_once, max_concurrent or at_once)
    each = f"{needs[0]:g} CPUs each" if len(set(needs)) == 1 else f"{min(needs):g}-{max(needs):g} CPUs each"
    plan = "all at once" if at_once == len(needs) else f"{at_once} at a time, the others queue"
    return f"{len(needs)} trials of {each} on the cluster's {cpus:g} CPUs: {plan}"
