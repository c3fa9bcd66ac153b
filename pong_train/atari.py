"""ALE environments for RLlib: id validation and the DeepMind-style Atari preprocessing."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from pong_train.errors import closest

RLLIB_ENV_NAME = "pong_train_atari"
"""Name under which the env creator is registered with Tune; the real id travels in env_config."""


def _register_ale() -> None:
    import ale_py

    gym.register_envs(ale_py)


def ale_env_ids() -> list[str]:
    _register_ale()
    return sorted(env_id for env_id, spec in gym.registry.items() if str(spec.entry_point).startswith("ale_py"))


def validate_env_id(env_id: str) -> str:
    """`env_id` if it is a registered ALE game (PongNoFrameskip-v4, ALE/Pong-v5, ...), else a ValueError with a
    hint (the Job's check, which names the field)."""
    known = ale_env_ids()
    if env_id in known:
        return env_id
    match = closest(env_id, known, cutoff=0.6)
    hint = f"; did you mean '{match}'?" if match else "; try PongNoFrameskip-v4 or ALE/Pong-v5"
    raise ValueError(f"'{env_id}' is not an Atari (ALE) environment id{hint}")


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


def make_frames_env(env_config: dict[str, Any]) -> gym.Env:
    """One env that sees what `AleVectorEnv` shows a policy, for playing a policy trained on it.

    gymnasium's Atari preprocessing (grayscale, area resize, frame skip with max-pooling, no-op starts),
    fire on reset and a frame stack, frames uint8 and channels last, as ale-py's C++ vector env makes
    them; unlike that env it renders, so episodes can be recorded.
    """
    _register_ale()
    spec = gym.spec(env_config["id"]).kwargs
    env = gym.make(env_config["id"], frameskip=1, render_mode=env_config.get("render_mode"),
                   repeat_action_probability=spec.get("repeat_action_probability", 0.0))
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=env_config["frameskip"],
                                          screen_size=env_config["dim"], grayscale_obs=True)
    env = FireOnReset(env)
    env = gym.wrappers.FrameStackObservation(env, env_config["framestack"])
    return gym.wrappers.TransformObservation(
        env, lambda frames: np.ascontiguousarray(np.moveaxis(frames, 0, -1)),
        gym.spaces.Box(0, 255, (env_config["dim"], env_config["dim"], env_config["framestack"]), np.uint8))


class FireOnReset(gym.Wrapper):
    """Press FIRE after each reset, as ale-py's vector env does, for games that wait for it."""

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        if "FIRE" in self.env.unwrapped.get_action_meanings():
            obs, _, terminated, truncated, info = self.env.step(1)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


RLLIB_VECTOR_ENV_NAME = "pong_train_ale_vector"
"""Name of the ale-py C++ vector env creator (RLlib's `vector_entry_point` mode)."""


class AleVectorEnv(gym.vector.VectorEnv):
    """All of an env runner's emulators stepped in ale-py's C++ vector env, preprocessing included.

    The same preprocessing as `make_env` (grayscale, resize to `dim`, frame skip with max-pooling, 30
    no-op starts, fire on reset, frame stack), done in C++ without Python per step; frames stay uint8
    (the model scales them). Sticky actions and the action set are as the env id defines them.
    """

    def __init__(self, env_config: dict[str, Any], num_envs: int) -> None:
        from ale_py.vector_env import AtariVectorEnv

        _register_ale()
        spec = gym.spec(env_config["id"]).kwargs
        dim, stack = env_config["dim"], env_config["framestack"]
        self._env = AtariVectorEnv(
            spec["game"], num_envs, num_threads=env_config.get("emulator_threads", 1), img_height=dim, img_width=dim, grayscale=True,
            stack_num=stack, frameskip=env_config["frameskip"], maxpool=True, noop_max=30, use_fire_reset=True,
            repeat_action_probability=spec.get("repeat_action_probability", 0.0),
            full_action_space=spec.get("full_action_space", False),
            max_num_frames_per_episode=spec.get("max_num_frames_per_episode", 108000),
            episodic_life=False, reward_clipping=False, autoreset_mode="NextStep",
        )
        self.num_envs = num_envs
        self.single_action_space = self._env.single_action_space
        self.action_space = self._env.action_space
        self.single_observation_space = gym.spaces.Box(0, 255, (dim, dim, stack), np.uint8)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.metadata = {**self._env.metadata, "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    @staticmethod
    def _channels_last(frames: np.ndarray) -> np.ndarray:
        # ale-py stacks as [B, stack, H, W]; RLlib's CNN encoder takes [B, H, W, C].
        return np.ascontiguousarray(frames.transpose(0, 2, 3, 1))

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict]:
        frames, info = self._env.reset(seed=seed, options=options)
        return self._channels_last(frames), info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        frames, rewards, terminated, truncated, info = self._env.step(np.asarray(actions, dtype=np.int64))
        return self._channels_last(frames), rewards.astype(np.float32), terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self._env.close()


def make_vector_env(env_config: dict[str, Any]) -> AleVectorEnv:
    """RLlib's vector entry point: it passes the env runner's env count as `num_envs`."""
    return AleVectorEnv(env_config, env_config.get("num_envs", 1))
