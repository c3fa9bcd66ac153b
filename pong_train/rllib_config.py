"""The single translation of a job's TrainConfig into RLlib's IMPALAConfig or APPOConfig."""

from __future__ import annotations

import dataclasses
from typing import Any

from pong_train import atari
from pong_train.config import APPO_DEFAULTS, TrainConfig
from pong_train.errors import UsageError


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
    """(RLlib config, pong-train's learner, the uint8-frames module) of the algorithm `run`."""
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.algorithms.impala import IMPALAConfig

    from pong_train import algorithms, learner, model

    return {
        "IMPALA": (IMPALAConfig(algorithms.WindowedIMPALA), learner.BootstrappingIMPALALearner,
                   model.Uint8FramesModule),
        "APPO": (APPOConfig(algorithms.WindowedAPPO), learner.BootstrappingAPPOLearner, model.Uint8FramesAPPOModule),
    }[run]


def appo_settings(c: TrainConfig) -> dict[str, Any]:
    """APPO's own training settings; a key the config leaves None takes pong-train's APPO default."""
    return {key: default if getattr(c, key) is None else getattr(c, key) for key, default in APPO_DEFAULTS.items()}


def env_settings(env: str, c: TrainConfig) -> dict[str, Any]:
    """The env_config every env of a run is made with: the ALE id, the frames' shape and the vector env's threads."""
    return {"id": env, "dim": c.dim, "framestack": c.framestack, "frameskip": c.frameskip,
            "emulator_threads": c.num_emulator_threads or 1}


def env_and_module(c: TrainConfig, frames_module: type) -> tuple[str, str, Any]:
    """The registered env, RLlib's vectorize mode and the RLModule spec: the C++ vector env with the uint8-frames
    module (`vector_env`), or RLlib's Python Atari wrappers with its default module."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    model_config = DefaultModelConfig(
        conv_filters=[list(f) for f in c.conv_filters] if c.conv_filters else default_conv_filters(c.dim),
        head_fcnet_hiddens=list(c.head_fcnet_hiddens),
        vf_share_layers=c.vf_share_layers,
    )
    if c.vector_env:
        return (atari.RLLIB_VECTOR_ENV_NAME, "vector_entry_point",
                RLModuleSpec(module_class=frames_module, model_config=dataclasses.asdict(model_config)))
    return atari.RLLIB_ENV_NAME, "sync", RLModuleSpec(model_config=model_config)


def algorithm_config(c: TrainConfig, env: str, run: str = "IMPALA") -> Any:
    """RLlib's IMPALAConfig or APPOConfig (`run`) training on the ALE game `env` with the settings `c`, whose
    `num_env_runners` and `num_emulator_threads` are resolved (see cluster.fit_to_cluster)."""
    from pong_train.callbacks import RunCallbacks

    rllib_config, learner_class, frames_module = algorithm_parts(run)
    env_name, vectorize, module_spec = env_and_module(c, frames_module)
    return (
        rllib_config
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
            learner_config_dict={"normalize_advantages": c.normalize_advantages, "vtrace_lambda": c.vtrace_lambda},
        )
        .training(
            train_batch_size_per_learner=c.train_batch_size_per_learner,
            num_epochs=c.num_epochs,
            minibatch_size=c.update_size(),
            lr=[list(point) for point in c.lr] if isinstance(c.lr, list) else c.lr,
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
        .callbacks(callbacks_class=RunCallbacks)
    )
