"""Plain stock RLlib IMPALA on Pong, for comparison with pong-train: no pong-train code at all.

RLlib's own Atari wrapper and default 42-pixel network, the article's settings scaled to this machine
(one env runner per spare core, fragments of 50), a local learner. Prints agent steps/s per iteration
and, at the end, the end-to-end rate computed the way pong-train's metrics.jsonl allows
(timesteps_total / time_total_s).

    python scripts/stock_impala.py --seconds 120
"""

import argparse
import os
import time

import ale_py
import gymnasium as gym
import ray
from ray.rllib.algorithms.impala import IMPALAConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack
from ray.rllib.models.utils import get_filter_config
from ray.tune import register_env


def make_pong(_config):
    gym.register_envs(ale_py)
    return wrap_atari_for_new_api_stack(gym.make("PongNoFrameskip-v4"), dim=42, framestack=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False)
    register_env("pong", make_pong)
    config = (
        IMPALAConfig()
        .environment("pong", clip_rewards=True)
        .env_runners(num_env_runners=max(1, cores - 1), num_envs_per_env_runner=16, rollout_fragment_length=50)
        .learners(num_learners=0)
        .rl_module(model_config=DefaultModelConfig(conv_filters=get_filter_config((42, 42, 4)), vf_share_layers=True))
    )
    algo = config.build_algo()
    started = time.perf_counter()
    result = {}
    while time.perf_counter() - started < args.seconds:
        result = algo.train()
        steps = result["env_runners"].get("num_env_steps_sampled_lifetime", 0)
        print(f"iter {result['training_iteration']:>3}  env steps {steps:>8,.0f}  "
              f"time_total_s {result['time_total_s']:>6.0f}  "
              f"end-to-end {steps / result['time_total_s']:>6.0f} steps/s", flush=True)
    steps = result["env_runners"].get("num_env_steps_sampled_lifetime", 0)
    print(f"stock RLlib IMPALA: {steps / result['time_total_s']:.0f} agent steps/s end to end "
          f"(timesteps_total / time_total_s over {result['training_iteration']} iterations)")
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
