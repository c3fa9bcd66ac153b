"""Training on a Ray cluster: join or start it, check its resources, run IMPALA through Tune."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pong_train import __version__, atari
from pong_train.config import cpus_needed, default_conv_filters, gpus_needed
from pong_train.errors import UsageError
from pong_train.job import Job, ResultLogger, Run
from pong_train.metrics import ResultRows, reached

log = logging.getLogger("pong_train")


def check_storage(storage_path: Path) -> None:
    """Refuse an unwritable storage path before anything starts (and before anything is written)."""
    existing = storage_path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--storage-path {storage_path}: {existing} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise UsageError(
            f"--storage-path {storage_path}: cannot write in {existing} ({err.strerror}); choose a folder you can write to"
        ) from None


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def check_address_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A quick TCP probe, so an unreachable --ray-address fails in seconds, not after Ray's long retries."""
    if address in ("auto", "local") or address.startswith(("ray://", "http")):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address '{address}' is not HOST:PORT (for example 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise UsageError(
            f"--ray-address {address}: no Ray cluster answers there ({err.strerror or err}); "
            "start one with `ray start --head` or leave --ray-address out to use an embedded cluster"
        ) from None


def connect_ray(job: Job) -> None:
    """Join the cluster at `job.ray_address`, or start an embedded one sized to this machine."""
    import ray

    quiet = dict(logging_level=logging.DEBUG if job.debug else logging.ERROR, log_to_driver=job.debug)
    if job.ray_address:
        check_address_reachable(job.ray_address)
        try:
            ray.init(address=job.ray_address, **quiet)
        except Exception as err:  # Ray raises several types for a refused join
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(f"--ray-address {job.ray_address}: cannot join the Ray cluster: {first}") from None
    else:
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=job.dashboard,
            dashboard_host="127.0.0.1",
            **quiet,
        )


def resolve_env_runners(job: Job, cluster_cpus: float) -> int:
    """`num_env_runners` as asked, or one per spare CPU of the cluster when unset."""
    config = job.config
    if config.num_env_runners is not None:
        return config.num_env_runners
    spare = cluster_cpus - 1 - config.num_learners
    return max(1, int(spare // config.num_cpus_per_env_runner))


def check_cluster_resources(job: Job, num_env_runners: int) -> None:
    """Refuse a job the cluster cannot place, instead of letting Tune wait for resources forever."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    need_gpus = gpus_needed(job.config)
    if need_gpus > gpus:
        raise UsageError(
            f"num_gpus_per_learner={job.config.num_gpus_per_learner:g} asks for {need_gpus:g} GPU(s) but the Ray "
            f"cluster has {gpus:g}; set \"num_gpus\": 0 in --config to train on the CPU"
        )
    need_cpus = cpus_needed(job.config, num_env_runners)
    if need_cpus > cpus:
        raise UsageError(
            f"num_env_runners={num_env_runners} needs {need_cpus:g} CPUs (one per env runner plus one for the learner) "
            f"but the Ray cluster has {cpus:g}; lower num_workers in --config or join a bigger cluster with --ray-address"
        )


def make_run_dir(job: Job) -> Path:
    """Create a new, uniquely named run directory; never reuses one."""
    base = job.name or f"{job.run}_{job.env.replace('/', '-')}"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        job.storage_path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--storage-path {job.storage_path}: cannot create it ({err.strerror})") from None
    for attempt in range(1000):
        run_dir = job.storage_path / (f"{base}_{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir.resolve()
    raise UsageError(f"--storage-path {job.storage_path}: could not create a unique run directory")


def impala_config(job: Job, num_env_runners: int) -> Any:
    """The single translation of the job's TrainConfig into RLlib's IMPALAConfig."""
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    c = job.config
    return (
        IMPALAConfig()
        .environment(
            atari.RLLIB_ENV_NAME,
            env_config={"id": job.env, "dim": c.dim, "framestack": c.framestack, "frameskip": c.frameskip},
            clip_rewards=c.clip_rewards,
        )
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=c.num_envs_per_env_runner,
            num_cpus_per_env_runner=c.num_cpus_per_env_runner,
            rollout_fragment_length=c.rollout_fragment_length,
        )
        .learners(num_learners=c.num_learners, num_gpus_per_learner=c.num_gpus_per_learner)
        .training(
            train_batch_size_per_learner=c.train_batch_size_per_learner,
            num_epochs=c.num_epochs,
            lr=c.lr,
            gamma=c.gamma,
            entropy_coeff=c.entropy_coeff,
            vf_loss_coeff=c.vf_loss_coeff,
            grad_clip=c.grad_clip,
            num_gpu_loader_threads=c.num_gpu_loader_threads,
        )
        .rl_module(
            model_config=DefaultModelConfig(
                conv_filters=[list(f) for f in c.conv_filters] if c.conv_filters else default_conv_filters(c.dim),
                head_fcnet_hiddens=list(c.head_fcnet_hiddens),
                vf_share_layers=c.vf_share_layers,
            )
        )
        .reporting(min_time_s_per_iteration=c.min_time_s_per_iteration)
        .fault_tolerance(restart_failed_env_runners=c.restart_failed_env_runners)
        .debugging(seed=c.seed)
        .callbacks(on_algorithm_init=_record_placement, on_train_result=_report_placement)
    )


def _record_placement(algorithm: Any, **_: Any) -> None:
    """Runs in the algorithm's process: note which Ray node each env runner lives on."""
    import ray

    def where(_runner: Any) -> dict[str, str]:
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}

    group = algorithm.env_runner_group
    runners = group.foreach_env_runner(where, local_env_runner=False) if group.num_remote_env_runners() else []
    algorithm._pong_train_placement = {
        "learner_node_id": ray.get_runtime_context().get_node_id(),
        "env_runners": runners,
    }


def _report_placement(algorithm: Any, result: dict, **_: Any) -> None:
    result["placement"] = getattr(algorithm, "_pong_train_placement", {})


class RunMonitor:
    """Driver-side bookkeeping of one run: result rows with aliases, stop criteria, loggers."""

    def __init__(self, run: Run, loggers: list[ResultLogger]) -> None:
        self.run = run
        self.loggers = loggers
        self.rows = ResultRows()
        self.latest: dict[str, dict] = {}

    def __getstate__(self) -> dict:
        # Tune pickles its stopper and callbacks into the experiment state; loggers hold files and clients.
        return {"run": self.run, "loggers": [], "rows": self.rows, "latest": {}}

    def should_stop(self, trial_id: str, result: dict) -> bool:
        self.latest[trial_id] = row = self.rows.row(result)
        return bool(reached(self.run.job.stop, row))

    def on_result(self, trial_id: str, result: dict) -> None:
        row = self.latest.get(trial_id) or self.rows.row(result)
        placement = result.get("placement")
        if placement:
            write_json(self.run.run_dir / "placement.json", placement)
        for logger in self.loggers:
            logger.log_result(row)

    def tune_hooks(self) -> tuple[Any, Any]:
        """The Tune stopper and callback that drive this monitor (Tune calls the stopper first)."""
        from ray import tune

        monitor = self

        class StopCriteria(tune.Stopper):
            def __call__(self, trial_id: str, result: dict) -> bool:
                return monitor.should_stop(trial_id, result)

            def stop_all(self) -> bool:
                return False

        class ForwardResults(tune.Callback):
            def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
                monitor.on_result(trial.trial_id, result)

        return StopCriteria(), ForwardResults()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def run_training(job: Job) -> int:
    """Train `job` from this process, on the Ray cluster it names or an embedded one.

    Checks everything checkable before creating the run directory, so bad input leaves nothing behind.
    Returns the process exit status.
    """
    check_storage(job.storage_path)
    if not job.ray_address and gpus_needed(job.config) > local_gpu_count():
        raise UsageError(
            f"num_gpus_per_learner={job.config.num_gpus_per_learner:g} (the article's num_gpus) asks for a GPU, "
            "but this machine has no CUDA GPU; set \"num_gpus\": 0 in --config to train on the CPU"
        )
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's banners would interleave with the result lines
    import ray
    from ray import tune

    if not job.debug:
        logging.getLogger("ray").setLevel(logging.ERROR)
    connect_ray(job)
    try:
        num_env_runners = resolve_env_runners(job, ray.cluster_resources().get("CPU", 0))
        check_cluster_resources(job, num_env_runners)
        algo_config = impala_config(job, num_env_runners)
        for note in job.notes:
            print(f"note: {note}", file=sys.stderr)
        run = Run(job=job, run_dir=make_run_dir(job))
        write_json(
            run.run_dir / "run.json",
            {
                "pong_train_version": __version__,
                "backend": job.backend,
                "run": job.run,
                "env": job.env,
                "stop": job.stop,
                "config": job.config.model_dump(mode="json") | {"num_env_runners": num_env_runners},
                "ray_address": job.ray_address,
                "argv": sys.argv[1:],
            },
        )
        tune.register_env(atari.RLLIB_ENV_NAME, atari.make_env)
        loggers = [logger for found in job.hook.pong_train_result_loggers(run=run) for logger in found]
        stopper, forwarder = RunMonitor(run, loggers).tune_hooks()
        tuner = tune.Tuner(
            algo_config.algo_class,
            param_space=algo_config,
            run_config=tune.RunConfig(
                name=run.run_dir.name,
                storage_path=str(run.run_dir.parent),
                stop=stopper,
                callbacks=[forwarder],
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=job.checkpoint_freq,
                    checkpoint_at_end=True,
                    num_to_keep=job.checkpoint_keep,
                ),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        try:
            results = tuner.fit()
        finally:
            for logger in loggers:
                logger.close()
        errors = results.errors
        if errors:
            first = str(errors[0]).strip().splitlines()
            print(f"pong-train: training failed: {first[-1] if first else type(errors[0]).__name__}", file=sys.stderr)
            print(f"pong-train: details in {run.run_dir}", file=sys.stderr)
            return 1
        print(f"run directory: {run.run_dir}")
        return 0
    finally:
        ray.shutdown()
