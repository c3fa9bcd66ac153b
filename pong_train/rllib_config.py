"""The single translation of a job's TrainConfig into RLlib's IMPALAConfig or APPOConfig, and the callbacks it
trains with."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from pong_train import atari
from pong_train.config import APPO_DEFAULTS, TrainConfig
from pong_train.errors import UsageError
from pong_train.metrics import ALIASES, ResultRows


def default_conv_filters(dim: int) -> list[list[Any]]:
    """RLlib's classic Atari CNN for 42- and 84-pixel frames, as Ray 0.8.3 built it: the last layer is
    'valid', so it sees the whole 11x11 map and outputs 1x1x256. (RLlib 2.60 pads every layer 'same',
    which leaves a 6x6 map and makes that layer about 36 times costlier.)"""
    if dim == 42:
        return [[16, 4, 2, "same"], [32, 4, 2, "same"], [256, 11, 1, "valid"]]
    if dim == 84:
        return [[16, 8, 4, "same"], [32, 4, 2, "same"], [256, 11, 1, "valid"]]
    raise UsageError(f"dim={dim} needs explicit conv_filters (RLlib has default filters for dim 42 and 84)")


def register_envs() -> None:
    """Make the env names the config uses known to Ray, in this process and the workers it starts."""
    from ray import tune

    tune.register_env(atari.RLLIB_ENV_NAME, atari.make_env)
    tune.register_env(atari.RLLIB_VECTOR_ENV_NAME, atari.make_vector_env)


def algorithm_parts(run: str) -> tuple[Any, Any, Any]:
    """(RLlib config class, pong-train's learner, the uint8-frames module) of the algorithm `run`."""
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.algorithms.impala import IMPALAConfig

    from pong_train import learner, model

    return {
        "IMPALA": (IMPALAConfig, learner.BootstrappingIMPALALearner, model.Uint8FramesModule),
        "APPO": (APPOConfig, learner.BootstrappingAPPOLearner, model.Uint8FramesAPPOModule),
    }[run]


def appo_settings(c: TrainConfig) -> dict[str, Any]:
    """APPO's own training settings; a key the config leaves None takes pong-train's APPO default."""
    return {key: default if getattr(c, key) is None else getattr(c, key) for key, default in APPO_DEFAULTS.items()}


def env_settings(env: str, c: TrainConfig) -> dict[str, Any]:
    """The env_config every env of a run is made with: the ALE id and the frames' shape."""
    return {"id": env, "dim": c.dim, "framestack": c.framestack, "frameskip": c.frameskip}


def algorithm_config(c: TrainConfig, env: str, run: str = "IMPALA") -> Any:
    """RLlib's IMPALAConfig or APPOConfig (`run`) training on the ALE game `env` with the settings `c`, whose
    `num_env_runners` is resolved (see cluster.fit_to_cluster)."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    config_class, learner_class, frames_module = algorithm_parts(run)
    model_config = DefaultModelConfig(
        conv_filters=[list(f) for f in c.conv_filters] if c.conv_filters else default_conv_filters(c.dim),
        head_fcnet_hiddens=list(c.head_fcnet_hiddens),
        vf_share_layers=c.vf_share_layers,
    )
    if c.vector_env:
        env_name, vectorize = atari.RLLIB_VECTOR_ENV_NAME, "vector_entry_point"
        module_spec = RLModuleSpec(module_class=frames_module, model_config=dataclasses.asdict(model_config))
    else:
        env_name, vectorize, module_spec = atari.RLLIB_ENV_NAME, "sync", RLModuleSpec(model_config=model_config)
    return (
        config_class()
        .environment(
            env_name,
            env_config=env_settings(env, c),
            clip_rewards=c.clip_rewards,
        )
        .env_runners(
            num_env_runners=c.num_env_runners,
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
            learner_class=learner_class if c.bootstrap_fragments else None,
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
            **(appo_settings(c) if run == "APPO" else {}),
        )
        .rl_module(rl_module_spec=module_spec)
        .reporting(min_time_s_per_iteration=c.min_time_s_per_iteration)
        .fault_tolerance(restart_failed_env_runners=c.restart_failed_env_runners)
        .debugging(seed=c.seed)
        .callbacks(on_algorithm_init=on_algorithm_init, on_train_result=on_train_result)
    )


def on_algorithm_init(algorithm: Any, **_: Any) -> None:
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


def cpu_seconds() -> float:
    """CPU time the calling process has used so far (all its threads, user and system), in seconds."""
    import psutil

    used = psutil.Process().cpu_times()
    return used.user + used.system


def process_use(_runner: Any = None) -> tuple[float, float]:
    """(resident MiB, CPU seconds so far) of the calling process."""
    return rss_mb(), cpu_seconds()


class CpuShare:
    """Each process's CPU time per wall second between successive results: 1.0 is one core kept busy.

    Shows which side waits: on 2 cores, a learner near 1 with env runners well under 1 is learner-bound."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, float]] | None = None

    def shares(self, cpu_s: dict[str, float]) -> dict[str, float]:
        now = time.monotonic()
        last, self._last = self._last, (now, cpu_s)
        if last is None or now <= last[0]:
            return {}
        # A replaced env runner is a new process whose clock restarted: no share for it this time.
        return {name: (used - last[1][name]) / (now - last[0])
                for name, used in cpu_s.items() if name in last[1] and used >= last[1][name]}


def on_train_result(algorithm: Any, result: dict, **_: Any) -> None:
    """Runs in the algorithm's process: the article's metric names join RLlib's in every result, so Tune's
    files and TensorBoard carry both; so do the memory and CPU share of the learner's and each env runner's
    process."""
    rows = algorithm.__dict__.setdefault("_pong_train_rows", ResultRows())
    row = rows.row(result)
    result.update({alias: row[alias] for alias in ALIASES if row[alias] is not None})
    result["placement"] = getattr(algorithm, "_pong_train_placement", {})
    group = algorithm.env_runner_group
    runners = group.foreach_env_runner(process_use, local_env_runner=False,
                                       timeout_seconds=10) if group.num_remote_env_runners() else []
    used = {"learner": process_use(), **{f"env_runner_{i}": use for i, use in enumerate(runners, 1)}}
    result["rss_mb"] = {name: mb for name, (mb, _) in used.items()}
    share = algorithm.__dict__.setdefault("_pong_train_cpu_share", CpuShare())
    result["cpu_share"] = share.shares({name: cpu for name, (_, cpu) in used.items()})
