"""Guards that fail when learning breaks: the V-trace targets at fragment ends, the learner and the env
runner agreeing on the policy for the same frames, and a short real run whose policy moves."""

from __future__ import annotations


import pytest
import torch

from pong_train.learner import vtrace_targets


def n_step_targets(rewards: list[float], bootstrap: float, gamma: float) -> list[float]:
    """The on-policy V-trace target of each step of a chunk: its discounted return to the chunk's end,
    plus the discounted value of the observation after it."""
    targets, acc = [], bootstrap
    for reward in reversed(rewards):
        acc = reward + gamma * acc
        targets.append(acc)
    return targets[::-1]


def chunk_tensors(rewards: list[float], values: list[float], terminated_last: bool) -> dict[str, torch.Tensor]:
    """One chunk and its appended bootstrap step, time-major [T, 1], as RLlib's learner connector lays it out."""
    steps = len(rewards)
    return {
        "rewards": torch.tensor(rewards + [0.0])[:, None],
        "values": torch.tensor(values)[:, None],
        "terminateds": torch.tensor([False] * (steps - 1) + [terminated_last, False])[:, None],
        "loss_mask": torch.tensor([1.0] * steps + [0.0])[:, None],
    }


@pytest.mark.parametrize("gamma", [0.99, 0.9])
def test_value_targets_bootstrap_from_the_fragment_end(gamma):
    rewards = [0.0, 0.0, 1.0, 0.0, 0.0]
    values = [0.3, -0.2, 0.5, 0.1, 0.4, 0.7]  # the last one: value of the observation after the chunk
    chunk = chunk_tensors(rewards, values, terminated_last=False)
    zeros = torch.zeros_like(chunk["rewards"])
    vs, advantages = vtrace_targets(target_logp=zeros, behaviour_logp=zeros, gamma=gamma,
                                    clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0, **chunk)
    expected = n_step_targets(rewards, bootstrap=values[-1], gamma=gamma)
    assert vs[:5, 0].tolist() == pytest.approx(expected, abs=1e-5)
    # The policy gradient's advantage of the last real step is its one-step TD error.
    assert advantages[4, 0].item() == pytest.approx(rewards[-1] + gamma * values[-1] - values[4], abs=1e-5)


def test_a_terminal_step_does_not_bootstrap():
    rewards = [0.0, 0.0, -1.0]
    values = [0.2, 0.1, -0.4, 5.0]  # 5.0: the value after the terminal step, which must not count
    chunk = chunk_tensors(rewards, values, terminated_last=True)
    zeros = torch.zeros_like(chunk["rewards"])
    vs, _ = vtrace_targets(target_logp=zeros, behaviour_logp=zeros, gamma=0.99,
                           clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0, **chunk)
    assert vs[:3, 0].tolist() == pytest.approx(n_step_targets(rewards, bootstrap=0.0, gamma=0.99), abs=1e-5)


def test_rllib_stock_loss_drops_the_bootstrap_which_is_why_pong_train_replaces_it():
    """If this fails, RLlib fixed its V-trace inputs and pong_train.learner can go."""
    from ray.rllib.algorithms.impala.torch.vtrace_torch_v2 import vtrace_torch

    chunk = chunk_tensors([0.0] * 4, [1.0] * 5, terminated_last=False)
    zeros = torch.zeros_like(chunk["rewards"])
    discounts = (1.0 - chunk["terminateds"].float()) * 0.99 * chunk["loss_mask"]  # RLlib 2.60's formula
    vs, _ = vtrace_torch(target_action_log_probs=zeros, behaviour_action_log_probs=zeros, discounts=discounts,
                         rewards=chunk["rewards"], values=chunk["values"], bootstrap_values=torch.ones(1))
    assert vs[:4, 0].tolist() == pytest.approx([0.0] * 4, abs=1e-6)


def learner_and_runner(vector_env: bool):
    """An env runner and a learner built from pong-train's own RLlib config, the learner holding the
    runner's weights, as after a weight broadcast."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from pong_train.config import TrainConfig
    from pong_train.job import Job
    from pong_train.rllib_config import impala_config, register_envs

    register_envs()
    # No remote env runners: the runner and the learner are built right here.
    train = TrainConfig(num_env_runners=0, num_envs_per_env_runner=3, rollout_fragment_length=20,
                        vector_env=vector_env, seed=1)
    config = impala_config(Job(backend="local", env="PongNoFrameskip-v4", config=train))
    runner = SingleAgentEnvRunner(config=config)
    learner = config.learner_class(config=config, module_spec=config.get_multi_rl_module_spec(env=runner.env))
    learner.build()
    learner.module["default_policy"].set_state(runner.module.get_state())
    return config, runner, learner


@pytest.mark.parametrize("vector_env", [True, False], ids=["cpp-vector-env", "python-wrappers"])
def test_learner_sees_the_policy_the_env_runner_acted_with(vector_env):
    """Same weights, same frames: the learner's log-probabilities of the taken actions equal the ones the env
    runner recorded. A frame scaling, layout or stacking mismatch between the two breaks this."""
    from ray.rllib.core.columns import Columns

    _config, runner, learner = learner_and_runner(vector_env)
    episodes = runner.sample(num_timesteps=60, random_actions=False)
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={},
                                       metrics=None)["default_policy"]
    module = learner.module["default_policy"]
    with torch.no_grad():
        logits = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
    logp = module.get_train_action_dist_cls().from_logits(logits).logp(batch[Columns.ACTIONS])
    real = batch[Columns.LOSS_MASK].bool()
    assert real.sum() >= 60
    assert torch.allclose(logp[real], batch[Columns.ACTION_LOGP][real], atol=1e-4)
    # Not trivially equal: frames one step off give log-probabilities this check tells apart.
    shifted = {**batch, Columns.OBS: torch.roll(batch[Columns.OBS], 1, dims=0)}
    with torch.no_grad():
        shifted_logits = module.forward_train(shifted)[Columns.ACTION_DIST_INPUTS]
    shifted_logp = module.get_train_action_dist_cls().from_logits(shifted_logits).logp(batch[Columns.ACTIONS])
    assert not torch.allclose(shifted_logp[real], batch[Columns.ACTION_LOGP][real], atol=1e-4)


def test_repeated_updates_on_real_frames_move_policy_and_value():
    """Twenty gradient steps of pong-train's learner on one real batch: the value loss falls and the policy
    leaves its initial entropy, so the loss reaches the network and the optimizer applies it."""
    _config, runner, learner = learner_and_runner(vector_env=True)
    episodes = runner.sample(num_timesteps=300, random_actions=False)
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={},
                                       metrics=None)

    def stats() -> tuple[float, float]:
        learner._uncompiled_update(batch)
        return tuple(float(learner.metrics.peek(("default_policy", key))) for key in ("mean_vf_loss", "entropy"))

    first_vf, first_entropy = stats()
    for _ in range(18):
        stats()
    last_vf, last_entropy = stats()
    assert last_vf < 0.5 * first_vf
    assert abs(last_entropy - first_entropy) > 1e-3
