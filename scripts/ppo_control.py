"""Control for docs/learning.md: RLlib PPO with CleanRL's Atari settings on pong-train's own sampling path.

Same env runner, ale-py C++ vector env, 42-pixel frames and uint8 network as `pong-train`'s IMPALA;
only the algorithm differs (1,024-step batches, 4 epochs of 256-step minibatches, lr 2.5e-4, clip 0.1,
GAE 0.95, normalized advantages). If this learns and IMPALA does not, the pipeline is sound and the
difference is the update rule. Writes one JSON line per iteration.

    python scripts/ppo_control.py OUT.jsonl SECONDS
"""

import json
import logging
import os
import sys
import time

os.environ.setdefault("RAY_worker_niceness", "0")

import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.rllib.algorithms.ppo import PPOConfig  # noqa: E402
from ray.rllib.core.rl_module.rl_module import RLModuleSpec  # noqa: E402

from pong_train import atari  # noqa: E402
from pong_train.rllib_config import default_conv_filters  # noqa: E402
from pong_train.model import Uint8FramesModule  # noqa: E402


def one_learner_thread(algorithm, **_):
    torch.set_num_threads(1)


def main() -> None:
    out_path, seconds = sys.argv[1], float(sys.argv[2])
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    tune.register_env(atari.RLLIB_VECTOR_ENV_NAME, atari.make_vector_env)
    model = {"conv_filters": default_conv_filters(42), "head_fcnet_hiddens": [], "vf_share_layers": True}
    config = (
        PPOConfig()
        .environment(atari.RLLIB_VECTOR_ENV_NAME, clip_rewards=True,
                     env_config={"id": "PongNoFrameskip-v4", "dim": 42, "framestack": 4, "frameskip": 4})
        .env_runners(num_env_runners=1, num_envs_per_env_runner=32, rollout_fragment_length=32,
                     gym_env_vectorize_mode="vector_entry_point")
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=1024, minibatch_size=256, num_epochs=4, lr=2.5e-4, clip_param=0.1,
                  vf_clip_param=10.0, entropy_coeff=0.01, vf_loss_coeff=0.5, lambda_=0.95, gamma=0.99,
                  grad_clip=0.5, grad_clip_by="global_norm")
        .rl_module(rl_module_spec=RLModuleSpec(module_class=Uint8FramesModule, model_config=model))
        .reporting(min_time_s_per_iteration=10)
        .callbacks(on_algorithm_init=one_learner_thread)
    )
    algo = config.build_algo()
    started = time.time()
    with open(out_path, "w") as out:
        while time.time() - started < seconds:
            result = algo.train()
            runners, learner = result["env_runners"], result["learners"]["default_policy"]
            row = {"steps": runners.get("num_env_steps_sampled_lifetime"), "t": round(time.time() - started),
                   "ret": runners.get("episode_return_mean"), "ent": learner.get("entropy"),
                   "vf": learner.get("vf_loss")}
            print(json.dumps(row, default=float), file=out, flush=True)
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
