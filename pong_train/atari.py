"""ALE environments for RLlib: id validation and the DeepMind-style Atari preprocessing."""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym

from pong_train.errors import UsageError

RLLIB_ENV_NAME = "pong_train_atari"
"""Name under which the env creator is registered with Tune; the real id travels in env_config."""


def _register_ale() -> None:
    import ale_py

    gym.register_envs(ale_py)


def ale_env_ids() -> list[str]:
    _register_ale()
    return sorted(env_id for env_id, spec in gym.registry.items() if str(spec.entry_point).startswith("ale_py"))


def validate_env_id(env_id: str) -> None:
    """Fail before Ray starts unless `env_id` is a registered ALE game (PongNoFrameskip-v4, ALE/Pong-v5, ...)."""
    known = ale_env_ids()
    if env_id in known:
        return
    match = difflib.get_close_matches(env_id, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{match[0]}'?" if match else "; try PongNoFrameskip-v4 or ALE/Pong-v5"
    raise UsageError(f"--env: '{env_id}' is not an Atari (ALE) environment id{hint}")


def make_env(env_config: dict[str, Any]) -> gym.Env:
    """Build one preprocessed Atari env; runs in every env runner process.

    Grayscale, resize to `dim`, frame skip with max-pooling, 30 no-op starts and a frame stack,
    by RLlib's own new-API-stack wrapper. Frame skipping is the wrapper's, so the emulator is
    asked for every frame; sticky actions stay as the id defines them (none for NoFrameskip ids).
    """
    from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack

    _register_ale()
    gym.logger.min_level = gym.logger.ERROR  # dtype-precision chatter from the wrappers' Box spaces
    env = gym.make(env_config["id"], frameskip=1, render_mode=env_config.get("render_mode"))
    return wrap_atari_for_new_api_stack(
        env,
        dim=env_config["dim"],
        frameskip=env_config["frameskip"],
        framestack=env_config["framestack"] if env_config["framestack"] > 1 else None,
    )
