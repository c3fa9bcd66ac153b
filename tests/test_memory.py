"""The env runner's memory stays flat however long the episodes get: RLlib 2.60 keeps every chunk it has returned
(frames included) until the chunk's episode ends; pong-train's callback keeps only their totals."""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest


def env_runner(plain_rllib: bool = False):
    from ray.rllib.callbacks.callbacks import RLlibCallback
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from pong_train.config import TrainConfig
    from pong_train.rllib_config import algorithm_config, register_envs

    register_envs()
    config = algorithm_config(TrainConfig(num_env_runners=0, num_envs_per_env_runner=2, rollout_fragment_length=50,
                                          seed=3), "PongNoFrameskip-v4")
    if plain_rllib:
        config = config.callbacks(callbacks_class=RLlibCallback)
    return SingleAgentEnvRunner(config=config)


@pytest.mark.slow
def test_rllib_alone_keeps_every_returned_chunk_which_is_why_the_callback_folds_them():
    """If this fails, RLlib stopped keeping returned chunks and pong_train.callbacks.ChunkTotals can go."""
    from pong_train.callbacks import RETURNED_CHUNKS

    runner = env_runner(plain_rllib=True)
    for _ in range(4):
        runner.sample(num_timesteps=100, random_actions=True)
        runner.get_metrics()
    held = getattr(runner, RETURNED_CHUNKS)
    assert held and all(len(chunks) == 4 for chunks in held.values())
    assert all(chunk.get_observations().nbytes > 50 * 42 * 42 * 4 for chunks in held.values() for chunk in chunks)


@pytest.mark.slow
def test_env_runner_holds_only_totals_and_still_reports_whole_episodes():
    from pong_train.callbacks import RETURNED_CHUNKS, ChunkTotals

    runner = env_runner()
    lengths: dict[str, int] = defaultdict(int)
    returns: dict[str, float] = defaultdict(float)
    for _ in range(100):  # random play ends a Pong episode within about 1,000 agent steps
        episodes = runner.sample(num_timesteps=100, random_actions=True)
        held = getattr(runner, RETURNED_CHUNKS)
        assert all(len(chunks) == 1 and isinstance(chunks[0], ChunkTotals) for chunks in held.values())
        for episode in episodes:
            lengths[episode.id_] += len(episode)
            returns[episode.id_] += episode.get_return()
        finished = [episode.id_ for episode in episodes if episode.is_done]
        metrics = runner.get_metrics()
        if finished:
            break
    assert finished, "no episode ended within 20,000 agent steps"
    # The whole episode, every chunk counted: what RLlib reports without the callback.
    assert float(metrics["episode_len_mean"]) == pytest.approx(statistics.mean(lengths[i] for i in finished))
    assert float(metrics["episode_return_mean"]) == pytest.approx(statistics.mean(returns[i] for i in finished))
    assert statistics.mean(lengths[i] for i in finished) > 500
