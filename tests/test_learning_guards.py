"""Guards that fail when learning breaks, for IMPALA and APPO: the V-trace targets at fragment ends (by hand
and inside each learner's loss), the learner and the env runner agreeing on the policy for the same frames,
the fast CNN computing RLlib's, and a short real run whose policy moves."""

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


def lambda_returns(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """TD(lambda) returns of a chunk by their definition, G_t = r_t + gamma ((1 - lambda) V_t+1 + lambda G_t+1),
    from the value after the chunk (`values[-1]`)."""
    returns, following = [], values[-1]
    for t in reversed(range(len(rewards))):
        following = rewards[t] + gamma * ((1 - lam) * values[t + 1] + lam * following)
        returns.append(following)
    return returns[::-1]


@pytest.mark.parametrize("lam", [0.95, 0.5])
def test_vtrace_lambda_on_policy_gives_td_lambda_returns(lam):
    rewards = [0.0, 1.0, 0.0, 0.0, -1.0, 0.0]
    values = [0.3, -0.2, 0.5, 0.1, 0.4, -0.6, 0.7]
    chunk = chunk_tensors(rewards, values, terminated_last=False)
    zeros = torch.zeros_like(chunk["rewards"])
    vs, advantages = vtrace_targets(target_logp=zeros, behaviour_logp=zeros, gamma=0.99, lambda_=lam,
                                    clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0, **chunk)
    expected = lambda_returns(rewards, values, gamma=0.99, lam=lam)
    assert vs[:6, 0].tolist() == pytest.approx(expected, abs=1e-5)
    # The policy gradient's advantage: one step of reward, then the next step's lambda-return.
    assert advantages[2, 0].item() == pytest.approx(rewards[2] + 0.99 * expected[3] - values[2], abs=1e-5)


def test_vtrace_at_lambda_1_is_rllibs_vtrace_off_policy():
    from ray.rllib.algorithms.impala.torch.vtrace_torch_v2 import vtrace_torch

    from pong_train.learner import vtrace

    generator = torch.Generator().manual_seed(0)
    shape = (7, 3)
    inputs = {"discounts": 0.99 * (torch.rand(shape, generator=generator) > 0.1),
              "rewards": torch.randn(shape, generator=generator), "values": torch.randn(shape, generator=generator),
              "bootstrap_values": torch.randn(3, generator=generator)}
    target, behaviour = (torch.log_softmax(torch.randn(*shape, 6, generator=generator), -1)[..., 0] for _ in "ab")
    ours = vtrace(target_logp=target, behaviour_logp=behaviour, clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0,
                  **inputs)
    rllibs = vtrace_torch(target_action_log_probs=target, behaviour_action_log_probs=behaviour, **inputs)
    assert torch.equal(ours[0], rllibs[0]) and torch.equal(ours[1], rllibs[1])
    assert not torch.equal(vtrace(target_logp=target, behaviour_logp=behaviour, clip_rho_threshold=1.0,
                                  clip_pg_rho_threshold=1.0, lambda_=0.9, **inputs)[0], rllibs[0])


def test_rllib_stock_loss_drops_the_bootstrap_which_is_why_pong_train_replaces_it():
    """If this fails, RLlib fixed its V-trace inputs and pong_train.learner can go."""
    from ray.rllib.algorithms.impala.torch.vtrace_torch_v2 import vtrace_torch

    chunk = chunk_tensors([0.0] * 4, [1.0] * 5, terminated_last=False)
    zeros = torch.zeros_like(chunk["rewards"])
    discounts = (1.0 - chunk["terminateds"].float()) * 0.99 * chunk["loss_mask"]  # RLlib 2.60's formula
    vs, _ = vtrace_torch(target_action_log_probs=zeros, behaviour_action_log_probs=zeros, discounts=discounts,
                         rewards=chunk["rewards"], values=chunk["values"], bootstrap_values=torch.ones(1))
    assert vs[:4, 0].tolist() == pytest.approx([0.0] * 4, abs=1e-6)


def learner_and_runner(vector_env: bool, run: str = "IMPALA", **settings):
    """An env runner and a learner of `run` built from pong-train's own RLlib config, the learner holding
    the runner's weights, as after a weight broadcast."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from pong_train.config import TrainConfig
    from pong_train.rllib_config import algorithm_config, register_envs

    register_envs()
    # No remote env runners: the runner and the learner are built right here.
    train = TrainConfig(num_env_runners=0, num_envs_per_env_runner=3, rollout_fragment_length=20,
                        vector_env=vector_env, seed=1, **settings)
    config = algorithm_config(train, "PongNoFrameskip-v4", run)
    runner = SingleAgentEnvRunner(config=config)
    learner = config.learner_class(config=config, module_spec=config.get_multi_rl_module_spec(env=runner.env))
    learner.build()
    module = learner.module["default_policy"].unwrapped()
    module.set_state(runner.module.get_state())
    for main_net, target_net in getattr(module, "get_target_network_pairs", list)():  # APPO: as after an update
        target_net.load_state_dict(main_net.state_dict())
    return config, runner, learner


@pytest.mark.parametrize("run", ["IMPALA", "APPO"])
@pytest.mark.parametrize("vector_env", [True, False], ids=["cpp-vector-env", "python-wrappers"])
def test_learner_sees_the_policy_the_env_runner_acted_with(vector_env, run):
    """Same weights, same frames: the learner's log-probabilities of the taken actions equal the ones the env
    runner recorded. A frame scaling, layout or stacking mismatch between the two breaks this."""
    from ray.rllib.core.columns import Columns

    _config, runner, learner = learner_and_runner(vector_env, run)
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


@pytest.mark.slow
@pytest.mark.parametrize("run", ["IMPALA", "APPO"])
def test_repeated_updates_on_real_frames_move_policy_and_value(run):
    """Fifty gradient steps of pong-train's learner on one real batch: the value loss falls and the policy
    leaves its initial entropy, so the loss reaches the network and the optimizer applies it."""
    _config, runner, learner = learner_and_runner(vector_env=True, run=run)
    episodes = runner.sample(num_timesteps=300, random_actions=False)
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={},
                                       metrics=None)

    def stats() -> tuple[float, float]:
        learner._uncompiled_update(batch)
        return tuple(float(learner.metrics.peek(("default_policy", key))) for key in ("mean_vf_loss", "entropy"))

    first_vf, first_entropy = stats()
    for _ in range(48):
        stats()
    last_vf, last_entropy = stats()
    assert last_vf < 0.8 * first_vf  # APPO regresses to fixed targets (its target network's), so it falls slower
    assert abs(last_entropy - first_entropy) > 1e-3


def hand_targets(batch: dict, values: torch.Tensor, gamma: float, row: int, lam: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """On-policy V-trace targets and advantages, walked backwards over the learner's flat batch, which V-trace
    reads in rows of `row` steps (rows run on across chunk ends): each real step's reward plus the discounted
    lambda-mix of the value and the target of the step after it (the advantage: its target); the value of that
    step instead where it is the appended bootstrap step (loss mask False) or starts the next row; nothing after
    a terminal step."""
    from ray.rllib.core.columns import Columns

    rewards, mask = batch[Columns.REWARDS].tolist(), batch[Columns.LOSS_MASK].tolist()
    terminated, values = batch[Columns.TERMINATEDS].tolist(), values.tolist()
    targets, advantages = [0.0] * len(rewards), [0.0] * len(rewards)
    for i in reversed(range(len(rewards) - 1)):
        if not mask[i]:
            continue
        bootstraps = not mask[i + 1] or (i + 1) % row == 0
        after = 0.0 if terminated[i] else (values[i + 1] if bootstraps else targets[i + 1])
        mixed = 0.0 if terminated[i] else (1 - lam) * values[i + 1] + lam * after
        targets[i] = rewards[i] + gamma * mixed
        advantages[i] = rewards[i] + gamma * after - values[i]
    return torch.tensor(targets), torch.tensor(advantages)


@pytest.mark.parametrize("run, bootstraps, lam", [("IMPALA", True, 1.0), ("APPO", True, 1.0), ("IMPALA", False, 1.0),
                                                ("APPO", False, 1.0), ("IMPALA", True, 0.9), ("APPO", True, 0.9)],
                         ids=["IMPALA", "APPO", "IMPALA-rllib-loss", "APPO-rllib-loss", "IMPALA-lambda", "APPO-lambda"])
def test_each_learners_loss_trains_on_bootstrapped_targets(run, bootstraps, lam):
    """Inside the real loss, not just the helper: on a fresh learner (behaviour, trained and APPO's target
    policy all equal, so V-trace is on-policy) the logged value loss and policy loss equal the ones made
    from hand-computed targets on real frames, rewards and chunk ends; RLlib 2.60's own learners, which drop
    the bootstrap at chunk ends, do not."""
    from ray.rllib.core.columns import Columns

    config, runner, learner = learner_and_runner(vector_env=True, run=run, bootstrap_fragments=bootstraps,
                                                 vtrace_lambda=lam)
    episodes = runner.sample(num_timesteps=200, random_actions=False)
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={},
                                       metrics=None)["default_policy"]
    module = learner.module["default_policy"].unwrapped()
    with torch.no_grad():
        module.vf.net.mlp[-1].bias.fill_(2.0)  # values far from 0, so a lost bootstrap shows in the targets
        fwd_out = module.forward_train(batch)
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        learner.compute_loss_for_module(module_id="default_policy", config=config, batch=batch, fwd_out=fwd_out)
    targets, advantages = hand_targets(batch, values, config.gamma, config.get_rollout_fragment_length(), lam)
    trained = batch[Columns.LOSS_MASK].float()
    count = trained.sum()
    assert count >= 200 and int((~batch[Columns.LOSS_MASK]).sum()) >= 3  # chunk ends of the 3 emulators
    expected_vf = 0.5 * torch.sum((values - targets) ** 2 * trained) / count
    vf_key = "mean_vf_loss" if bootstraps or run == "IMPALA" else "vf_loss"  # RLlib's APPO logs the mean as vf_loss
    logged = float(learner.metrics.peek(("default_policy", vf_key)))
    if not bootstraps:
        assert logged != pytest.approx(float(expected_vf), rel=1e-2)
        return
    assert logged == pytest.approx(float(expected_vf), rel=1e-3)
    logged_pi = float(learner.metrics.peek(("default_policy", "mean_pi_loss")))
    if run == "APPO":  # APPO's surrogate with ratio 1 is the advantage itself
        expected_pi = -torch.sum(advantages * trained) / count
    else:  # IMPALA's policy loss weights each advantage by its action's log-probability
        logp = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS]).logp(
            batch[Columns.ACTIONS])
        expected_pi = -torch.sum(logp * advantages * trained) / count
    assert logged_pi == pytest.approx(float(expected_pi), rel=1e-3, abs=1e-6)


def test_appo_target_policy_sees_the_frames_the_env_runner_saw():
    """APPO clips against its target network, which has its own forward pass: with the env runner's weights,
    the target's log-probabilities of the taken actions are the env runner's (unscaled uint8 frames, or
    any other difference in what the target sees, would skew every ratio)."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis import TARGET_NETWORK_ACTION_DIST_INPUTS

    _config, runner, learner = learner_and_runner(vector_env=True, run="APPO")
    module = learner.module["default_policy"].unwrapped()
    episodes = runner.sample(num_timesteps=60, random_actions=False)
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={},
                                       metrics=None)["default_policy"]
    with torch.no_grad():
        logits = module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS]
    logp = module.get_train_action_dist_cls().from_logits(logits).logp(batch[Columns.ACTIONS])
    real = batch[Columns.LOSS_MASK].bool()
    assert torch.allclose(logp[real], batch[Columns.ACTION_LOGP][real], atol=1e-4)


@pytest.mark.parametrize("dim, filters", [
    (42, [[16, 4, 2, "same"], [32, 4, 2, "same"], [256, 11, 1, "valid"]]),
    (84, [[16, 8, 4, "same"], [32, 4, 2, "same"], [256, 11, 1, "valid"]]),
    (42, [[16, 4, 2], [32, 4, 2], [64, 3, 1]]),
], ids=["classic-42", "classic-84", "all-same"])
def test_fast_cnn_computes_rllibs_cnn(dim, filters):
    """The same parameters give the same outputs and the same gradients as RLlib's TorchCNN."""
    import copy

    from ray.rllib.core.models.torch.primitives import TorchCNN

    from pong_train.model import FastTorchCNN

    torch.manual_seed(0)
    rllib = TorchCNN(input_dims=[dim, dim, 4], cnn_filter_specifiers=filters)
    fast = copy.deepcopy(rllib)
    fast.__class__ = FastTorchCNN
    frames = torch.randn(8, dim, dim, 4)
    out_rllib, out_fast = rllib(frames), fast(frames)
    assert out_fast.shape == out_rllib.shape
    assert torch.allclose(out_fast, out_rllib, atol=1e-5)
    out_rllib.square().sum().backward()
    out_fast.square().sum().backward()
    for (name, a), (_, b) in zip(rllib.named_parameters(), fast.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5), name
    assert list(fast.state_dict()) == list(rllib.state_dict())  # checkpoints load either way


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("run", ["IMPALA", "APPO"])
def test_a_short_run_under_the_defaults_moves_its_losses_and_its_entropy(tmp_path, run):
    """The defaults as a user gets them (one env runner of 64 emulators, 100-step updates), for 90 seconds: a change
    that silently stops learning (no gradient reaching the policy, a learning rate of 0) leaves the entropy where the
    network started and fails here."""
    import math
    import statistics

    from helpers import run_cli, run_dirs
    from pong_train.loggers import read_metrics

    proc = run_cli("--run", run, "--config", '{"num_gpus": 0}', "--stop", '{"time_total_s": 90}',
                   "--storage-path", str(tmp_path), "--quiet", timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(tmp_path)
    rows = [row for row in read_metrics(run_dir / "metrics.jsonl") if row.get("learners/default_policy/entropy")]
    assert len(rows) >= 4, f"{len(rows)} results with a learner update in 90 s"
    entropy = [row["learners/default_policy/entropy"] for row in rows]
    vf_loss = [row["learners/default_policy/vf_loss"] for row in rows]
    assert all(math.isfinite(value) for value in entropy + vf_loss)
    assert max(entropy) - min(entropy) > 0.01, entropy  # the policy moved
    assert statistics.pstdev(vf_loss) > 0, vf_loss
    assert all(value <= math.log(6) + 1e-4 for value in entropy)  # a distribution over Pong's 6 actions
