"""Training on a Ray cluster: join or start it, check its resources, run IMPALA through Tune."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from pong_train import __version__, atari, progress
from pong_train.config import cpus_needed, default_conv_filters, gpus_needed
from pong_train.errors import UsageError
from pong_train.job import Job, ResultLogger, Run
from pong_train.loggers import GuardedLogger
from pong_train.metrics import ALIASES, ResultRows, reached

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


def validate_address(address: str) -> tuple[str, int] | None:
    """HOST:PORT of a Ray cluster (None for 'auto'); anything else is refused."""
    if address == "auto":
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in host):
        raise UsageError(f"--ray-address '{address}' is not HOST:PORT (for example 127.0.0.1:6379) or 'auto'")
    return host, int(port)


def check_address_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A quick TCP probe, so an unreachable --ray-address fails in seconds, not after Ray's long retries."""
    endpoint = validate_address(address)
    if endpoint is None:
        return
    host, port = endpoint
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except (OSError, UnicodeError, ValueError) as err:
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
        warn_small_shared_memory()
        # Ray starts its workers at nice 15: anything else on the machine then starves the emulators.
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=job.dashboard,
            dashboard_host="127.0.0.1",
            **quiet,
        )


MIN_SHARED_MEMORY = 1 << 30


def warn_small_shared_memory(path: str = "/dev/shm") -> None:
    """Ray's object store lives in /dev/shm; containers often get 64 MiB, and Ray then falls back to disk."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return
    if free < MIN_SHARED_MEMORY:
        print(f"warning: {path} has only {free >> 20} MiB free; Ray's object store falls back to disk, which is "
              "slower (in Docker, start the container with --shm-size=2g or more)", file=sys.stderr)


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

    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from pong_train.learner import BootstrappingIMPALALearner

    c = job.config
    model_config = DefaultModelConfig(
        conv_filters=[list(f) for f in c.conv_filters] if c.conv_filters else default_conv_filters(c.dim),
        head_fcnet_hiddens=list(c.head_fcnet_hiddens),
        vf_share_layers=c.vf_share_layers,
    )
    if c.vector_env:
        from pong_train.model import Uint8FramesModule

        env_name, vectorize = atari.RLLIB_VECTOR_ENV_NAME, "vector_entry_point"
        module_spec = RLModuleSpec(module_class=Uint8FramesModule, model_config=dataclasses.asdict(model_config))
    else:
        env_name, vectorize, module_spec = atari.RLLIB_ENV_NAME, "sync", RLModuleSpec(model_config=model_config)
    return (
        IMPALAConfig()
        .environment(
            env_name,
            env_config={"id": job.env, "dim": c.dim, "framestack": c.framestack, "frameskip": c.frameskip},
            clip_rewards=c.clip_rewards,
        )
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=c.num_envs_per_env_runner,
            num_cpus_per_env_runner=c.num_cpus_per_env_runner,
            rollout_fragment_length=c.rollout_fragment_length,
            gym_env_vectorize_mode=vectorize,
            # While every remote env runner is down (being replaced), the algorithm samples itself.
            create_env_on_local_worker=c.restart_failed_env_runners,
        )
        .learners(
            num_learners=c.num_learners,
            num_gpus_per_learner=c.num_gpus_per_learner,
            learner_class=BootstrappingIMPALALearner if c.bootstrap_fragments else None,
            learner_config_dict={"normalize_advantages": c.normalize_advantages},
        )
        .training(
            train_batch_size_per_learner=c.train_batch_size_per_learner,
            num_epochs=c.num_epochs,
            minibatch_size=c.update_size(),
            lr=c.lr,
            gamma=c.gamma,
            entropy_coeff=c.entropy_coeff,
            vf_loss_coeff=c.vf_loss_coeff,
            grad_clip=c.grad_clip,
            num_gpu_loader_threads=c.num_gpu_loader_threads,
        )
        .rl_module(rl_module_spec=module_spec)
        .reporting(min_time_s_per_iteration=c.min_time_s_per_iteration)
        .fault_tolerance(restart_failed_env_runners=c.restart_failed_env_runners)
        .debugging(seed=c.seed)
        .callbacks(on_algorithm_init=_on_algorithm_init, on_train_result=_on_train_result)
    )


def _on_algorithm_init(algorithm: Any, **_: Any) -> None:
    """Runs in the algorithm's process: note which Ray node each env runner lives on."""
    import ray
    import torch

    # The local learner trains here; a second torch thread only contends with the env runners.
    torch.set_num_threads(1)

    def where(_runner: Any) -> dict[str, Any]:
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                "pid": os.getpid()}

    group = algorithm.env_runner_group
    runners = group.foreach_env_runner(where, local_env_runner=False) if group.num_remote_env_runners() else []
    algorithm._pong_train_placement = {
        "learner_node_id": ray.get_runtime_context().get_node_id(),
        "env_runners": runners,
    }


def rss_mb() -> float:
    """Resident memory of the calling process, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _on_train_result(algorithm: Any, result: dict, **_: Any) -> None:
    """Runs in the algorithm's process: the article's metric names join RLlib's in every result, so Tune's
    files and TensorBoard carry both; so does the memory of the learner's and each env runner's process."""
    rows = algorithm.__dict__.setdefault("_pong_train_rows", ResultRows())
    row = rows.row(result)
    result.update({alias: row[alias] for alias in ALIASES if row[alias] is not None})
    result["placement"] = getattr(algorithm, "_pong_train_placement", {})
    group = algorithm.env_runner_group
    runners = group.foreach_env_runner(lambda _runner: rss_mb(), local_env_runner=False,
                                       timeout_seconds=10) if group.num_remote_env_runners() else []
    result["rss_mb"] = {"learner": rss_mb(), **{f"env_runner_{i}": mb for i, mb in enumerate(runners, 1)}}


# State of the run this process drives, kept outside the Tune stopper and callback: Tune pickles those
# into its experiment state, and a resumed run gets them back unpickled.
_live_loggers: dict[str, list[ResultLogger]] = {}
_interrupted: dict[str, int] = {}


class RunMonitor:
    """Driver-side bookkeeping of one run: result rows with aliases, stop criteria, loggers, interruption."""

    def __init__(self, run: Run, loggers: list[ResultLogger]) -> None:
        self.run_dir = str(run.run_dir)
        self.stop = run.job.stop
        self.rows = ResultRows()
        self.latest: dict[str, dict] = {}
        _live_loggers[self.run_dir] = [GuardedLogger(logger) for logger in loggers]

    def __getstate__(self) -> dict:
        return {"run_dir": self.run_dir, "stop": self.stop, "rows": self.rows, "latest": {}}

    def should_stop(self, trial_id: str, result: dict) -> bool:
        self.latest[trial_id] = row = self.rows.row(result)
        # An interrupted run stops like a finished one, so Tune writes its checkpoint at the end.
        return bool(reached(self.stop, row)) or self.run_dir in _interrupted

    def on_result(self, trial_id: str, result: dict) -> None:
        row = self.latest.pop(trial_id, None) or self.rows.row(result)
        row["rss_mb/driver"] = rss_mb()
        placement = result.get("placement")
        if placement:
            write_json(Path(self.run_dir) / "placement.json", placement)
        for logger in _live_loggers.get(self.run_dir, []):
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


@contextlib.contextmanager
def checkpoint_on_signal(run_dir: Path) -> Iterator[None]:
    """Ctrl-C or SIGTERM: finish the current iteration, checkpoint, stop. A second one aborts at once."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, _frame: Any) -> None:
        if str(run_dir) in _interrupted:
            raise KeyboardInterrupt
        _interrupted[str(run_dir)] = signum
        print("pong-train: stopping after this iteration to save a checkpoint (again to abort)", file=sys.stderr)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


RUN_FILE = "run.json"


def job_record(job: Job, num_env_runners: int, status: str) -> dict[str, Any]:
    """What `run.json` keeps: enough to describe the run and to resume it."""
    return {
        "pong_train_version": __version__,
        "status": status,
        "backend": job.backend,
        "run": job.run,
        "env": job.env,
        "stop": job.stop,
        "config": job.config.model_dump(mode="json") | {"num_env_runners": num_env_runners},
        "checkpoint_freq": job.checkpoint_freq,
        "checkpoint_keep": job.checkpoint_keep,
        "name": job.name,
        "ray_address": job.ray_address,
        "options": job.options,
        "argv": sys.argv[1:],
    }


def run_training(job: Job) -> int:
    """Train `job` from this process, on the Ray cluster it names or an embedded one.

    Checks everything checkable before creating the run directory, so bad input leaves nothing behind.
    With `job.resume_dir`, continues that run from its latest checkpoint. Returns the exit status.
    """
    check_storage(job.storage_path)
    if not job.ray_address and gpus_needed(job.config) > local_gpu_count():
        raise UsageError(
            f"num_gpus_per_learner={job.config.num_gpus_per_learner:g} (the article's num_gpus) asks for a GPU, "
            "but this machine has no CUDA GPU; set \"num_gpus\": 0 in --config to train on the CPU"
        )
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's banners would interleave with the result lines
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # checkpoint_on_signal handles Ctrl-C
    import ray
    from ray import tune

    if not job.debug:
        logging.getLogger("ray").setLevel(logging.ERROR)
        logging.getLogger("ray.rllib").setLevel(logging.ERROR)
    with progress.step("joining the Ray cluster" if job.ray_address else "starting an embedded Ray cluster"):
        connect_ray(job)
    try:
        num_env_runners = resolve_env_runners(job, ray.cluster_resources().get("CPU", 0))
        check_cluster_resources(job, num_env_runners)
        algo_config = impala_config(job, num_env_runners)
        for note in job.notes:
            print(f"note: {note}", file=sys.stderr)
        run = Run(job=job, run_dir=job.resume_dir or make_run_dir(job))
        write_json(run.run_dir / RUN_FILE, job_record(job, num_env_runners, "running"))
        tune.register_env(atari.RLLIB_ENV_NAME, atari.make_env)
        tune.register_env(atari.RLLIB_VECTOR_ENV_NAME, atari.make_vector_env)
        loggers = [logger for found in job.hook.pong_train_result_loggers(run=run) for logger in found]
        stopper, forwarder = RunMonitor(run, loggers).tune_hooks()
        if job.resume_dir:
            resume_all = tune.ResumeConfig(
                finished=tune.ResumeConfig.ResumeType.RESUME,
                unfinished=tune.ResumeConfig.ResumeType.RESUME,
                errored=tune.ResumeConfig.ResumeType.RESUME,
            )
            with progress.step(f"restoring {run.run_dir} from its latest checkpoint"):
                tuner = tune.Tuner.restore(str(run.run_dir), algo_config.algo_class, _resume_config=resume_all)
        else:
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
            with checkpoint_on_signal(run.run_dir):
                results = tuner.fit()
        finally:
            for logger in _live_loggers.pop(str(run.run_dir), []):
                logger.close()
        return finish(run, num_env_runners, results)
    finally:
        ray.shutdown()


def finish(run: Run, num_env_runners: int, results: Any) -> int:
    """Record how the run ended in run.json and turn it into an exit status."""
    signum = _interrupted.pop(str(run.run_dir), None)
    if results.errors:
        first = str(results.errors[0]).strip().splitlines()
        print(f"pong-train: training failed: {first[-1] if first else type(results.errors[0]).__name__}",
              file=sys.stderr)
        print(f"pong-train: details in {run.run_dir}; resume with: pong-train --resume {run.run_dir}",
              file=sys.stderr)
        status, code = "failed", 1
    elif signum is not None:
        print(f"pong-train: checkpoint saved; resume with: pong-train --resume {run.run_dir}", file=sys.stderr)
        status, code = "interrupted", 128 + signum
    else:
        status, code = "completed", 0
        print(f"run directory: {run.run_dir}")
    write_json(run.run_dir / RUN_FILE, job_record(run.job, num_env_runners, status))
    plot_at_end(run.run_dir)
    if run.job.json_summary:
        print(json.dumps(summary(run, status)))
    return code


def summary(run: Run, status: str) -> dict[str, Any]:
    """The machine-readable end of a run (`--json`): where it is, how it ended, its last figures."""
    from pong_train.loggers import METRICS_FILE, read_metrics

    metrics = run.run_dir / METRICS_FILE
    rows = read_metrics(metrics) if metrics.exists() else []
    last = rows[-1] if rows else {}
    checkpoints = sorted(run.run_dir.glob("*/checkpoint_*"))
    keys = ("training_iteration", "episode_reward_mean", "episodes_total", "timesteps_total", "time_total_s")
    return {"status": status, "run_dir": str(run.run_dir),
            "checkpoint": str(checkpoints[-1]) if checkpoints else None, **{k: last.get(k) for k in keys}}


def plot_at_end(run_dir: Path) -> None:
    from pong_train.loggers import METRICS_FILE
    from pong_train.plotting import plot_runs

    if not (run_dir / METRICS_FILE).exists():
        return
    try:
        print(f"learning curve: {plot_runs([run_dir], run_dir / 'curve.png')}")
    except Exception as err:  # a plot must not turn a finished run into a failed one
        print(f"warning: no learning curve plotted ({type(err).__name__}: {err})", file=sys.stderr)
