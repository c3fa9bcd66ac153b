"""Metric names: the article's names over RLlib's result paths, its 100-episode window, and stop criteria
validated up front."""

from __future__ import annotations

import math

import pytest

from pong_train.metrics import (ARTICLE_NAMES, EPISODE_WINDOW, EpisodeWindow, add_article_names, reached,
                                reported_row, validate_stop)

pytestmark = pytest.mark.timeout(60)  # fast: pure functions


def rllib_result(iteration: int, episodes: int, steps: int, ret: float) -> dict:
    return {
        "training_iteration": iteration,
        "time_total_s": 2.0 * iteration,
        "config": {"lr": 0.1},
        "env_runners": {
            "episode_return_mean": ret,
            "num_episodes_lifetime": episodes,
            "num_env_steps_sampled_lifetime": steps,
        },
    }


def row_of(result: dict, window: EpisodeWindow, finished: list[tuple[float, int]] = ()) -> dict:
    """The driver's row of `result` after the algorithm's callback added the article's names."""
    result["env_runners"]["finished_episodes"] = [{"return": r, "length": n} for r, n in finished]
    add_article_names(result, window)
    return reported_row(result)


def test_old_and_new_metric_names_are_both_valid_stop_keys():
    assert validate_stop({"episode_reward_mean": 18, "time_total_s": 3600}) == {
        "episode_reward_mean": 18.0, "time_total_s": 3600.0}
    checked = validate_stop({"env_runners/episode_return_mean": 18, "timesteps_total": 1e6, "training_iteration": 3})
    assert checked == {"env_runners/episode_return_mean": 18.0, "timesteps_total": 1e6, "training_iteration": 3.0}
    assert all(type(threshold) is float for threshold in checked.values())
    assert validate_stop({}) == {}


@pytest.mark.parametrize("bad, hint", [({"episode_reward_mean": True}, "finite number"),
                                       ({"time_total_s": float("inf")}, "finite number"),
                                       ({7: 1}, "must be strings")])
def test_thresholds_that_are_not_plain_finite_numbers_are_refused(bad, hint):
    with pytest.raises(ValueError, match=hint):
        validate_stop(bad)


@pytest.mark.parametrize("bad, hint", [({"episode_rewrd_mean": 18}, "episode_reward_mean"),
                                       ({"time_total": 10}, "time_total_s"),
                                       ({"episode_reward_mean": "high"}, "finite number"),
                                       ({"episode_reward_mean": float("nan")}, "finite number")])
def test_bad_stop_criteria_are_refused_with_a_hint(bad, hint):
    with pytest.raises(ValueError, match=hint):
        validate_stop(bad)


def test_rows_carry_rllib_paths_and_the_article_names():
    row = row_of(rllib_result(1, 1, 800, -20.0), EpisodeWindow(), [(-20.0, 900)])
    assert row["env_runners/episode_return_mean"] == -20.0
    assert row["episode_reward_mean"] == -20.0 and row["episode_len_mean"] == 900
    assert row["episodes_total"] == 1 and row["timesteps_total"] == 800
    assert "config/lr" not in row and "env_runners/finished_episodes" not in row
    assert set(ARTICLE_NAMES) <= set(row)


def test_episode_statistics_carry_over_an_iteration_without_episodes():
    window = EpisodeWindow()
    row_of(rllib_result(1, 1, 800, -20.0), window, [(-20.0, 900)])
    row = row_of(rllib_result(2, 1, 1600, math.nan), window)
    assert row["episode_reward_mean"] == -20.0
    assert row["env_runners/episode_return_mean"] is None  # RLlib's own path stays as reported


def test_no_episode_yet_means_no_episode_statistics():
    row = row_of(rllib_result(1, 0, 800, math.nan), EpisodeWindow())
    assert row["episode_reward_mean"] is None and row["episode_len_mean"] is None and row["episodes_total"] == 0


def test_the_article_statistics_cover_the_last_100_episodes_across_iterations():
    """RLlib 0.8.3's window: 150 episodes over 3 iterations; the statistics are those of the last 100."""
    window = EpisodeWindow()
    returns = [float(i % 43 - 21) for i in range(150)]
    lengths = [800 + i for i in range(150)]
    episodes = list(zip(returns, lengths))
    for iteration, chunk in enumerate((episodes[:7], episodes[7:120], episodes[120:]), 1):
        row = row_of(rllib_result(iteration, 0, 0, 0.0), window, chunk)
    last = returns[-EPISODE_WINDOW:]
    assert row["episode_reward_mean"] == pytest.approx(sum(last) / 100)
    assert row["episode_reward_max"] == max(last) and row["episode_reward_min"] == min(last)
    assert row["episode_len_mean"] == pytest.approx(sum(lengths[-100:]) / 100)
    # The iteration's own mean (RLlib's path) is not the window's.
    assert row["episode_reward_mean"] != pytest.approx(sum(returns[120:]) / 30)


def test_stop_criteria_compare_on_either_name():
    row = row_of(rllib_result(3, 5, 2400, 19.0), EpisodeWindow(), [(19.0, 2000)])
    assert reached({"episode_reward_mean": 18}, row) == ["episode_reward_mean"]
    assert reached({"env_runners/num_episodes_lifetime": 6, "training_iteration": 3}, row) == ["training_iteration"]
    assert reached({"episode_reward_mean": 20}, row) == []


def test_a_lucky_iteration_does_not_stop_a_run_whose_last_100_episodes_lose():
    """The figure the article's stop criterion reads: 8 wins at +19 after 92 losses at -21 is not 18."""
    window = EpisodeWindow()
    row_of(rllib_result(1, 92, 10, -21.0), window, [(-21.0, 800)] * 92)
    row = row_of(rllib_result(2, 100, 20, 19.0), window, [(19.0, 2000)] * 8)
    assert row["env_runners/episode_return_mean"] == 19.0
    assert row["episode_reward_mean"] == pytest.approx((92 * -21 + 8 * 19) / 100)
    assert reached({"episode_reward_mean": 18}, row) == []


def test_numpy_scalars_count_as_numbers():
    import numpy as np

    row = row_of(rllib_result(1, np.int64(3), np.int64(900), np.float32(-20.5)), EpisodeWindow(),
                 [(np.float32(-20.5), np.int64(900))])
    assert row["episode_reward_mean"] == -20.5 and type(row["episode_reward_mean"]) is float
    assert row["episodes_total"] == 3 and type(row["episodes_total"]) is int


def test_finished_episodes_travel_from_the_env_runner_callback_through_rllib_metrics_to_the_window():
    """The real path: RunCallbacks.on_episode_end logs into an env runner's MetricsLogger (an episode's chunks
    returned earlier included), the algorithm's root logger aggregates two env runners' metrics as IMPALA does,
    and the result's episodes fill the window."""
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    from pong_train.callbacks import ChunkTotals, RunCallbacks

    def episode(rewards: list[float]) -> SingleAgentEpisode:
        return SingleAgentEpisode(observations=[0] * (len(rewards) + 1), actions=[0] * len(rewards),
                                  rewards=rewards, terminated=True, len_lookback_buffer=0)

    callbacks = RunCallbacks()
    runners = [MetricsLogger(), MetricsLogger()]
    callbacks.on_episode_end(episode=episode([1.0, -1.0, 1.0]), prev_episode_chunks=[episode([1.0] * 4)],
                             metrics_logger=runners[0])
    callbacks.on_episode_end(episode=episode([-1.0] * 2), prev_episode_chunks=[ChunkTotals([episode([-1.0] * 5)])],
                             metrics_logger=runners[0])
    callbacks.on_episode_end(episode=episode([-1.0]), prev_episode_chunks=[], metrics_logger=runners[1])
    algorithm = MetricsLogger(root=True)
    algorithm.aggregate([runner.reduce() for runner in runners], key="env_runners")
    result = algorithm.compile()
    window = EpisodeWindow()
    add_article_names(result, window)
    assert sorted(window.episodes) == [(-7.0, 7), (-1.0, 1), (5.0, 7)]
    assert result["episode_reward_mean"] == pytest.approx(-1.0) and result["episode_len_mean"] == pytest.approx(5.0)
    # One episode alone: RLlib compiles a series of one to the item itself.
    callbacks.on_episode_end(episode=episode([1.0]), prev_episode_chunks=[], metrics_logger=runners[1])
    algorithm.aggregate([runner.reduce() for runner in runners], key="env_runners")
    add_article_names(algorithm.compile(), window)
    assert len(window.episodes) == 4 and window.episodes[-1] == (1.0, 1)


def test_cpu_share_is_cpu_time_per_wall_second_and_skips_a_restarted_process():
    import time

    from pong_train.callbacks import CpuShare

    share = CpuShare()
    assert share.shares({"learner": 10.0, "env_runner_1": 5.0}) == {}  # nothing to compare with yet
    time.sleep(0.2)
    shares = share.shares({"learner": 10.2, "env_runner_1": 0.1})  # env runner 1 was replaced: its clock restarted
    assert set(shares) == {"learner"} and 0.5 < shares["learner"] <= 1.0


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("run", ["IMPALA", "APPO"])
def test_the_window_travels_with_the_checkpoint(tmp_path, run):
    """A resumed run keeps its window: the algorithm's checkpoint holds its last episodes, and restoring it (as
    Tune does on --resume) brings them back."""
    import ray

    from pong_train.config import TrainConfig
    from pong_train.rllib_config import algorithm_config, register_envs

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        register_envs()
        train = TrainConfig(num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=20)
        config = algorithm_config(train, "PongNoFrameskip-v4", run)
        first = config.build_algo()
        kept = [(float(-21 + i % 5), 800 + i) for i in range(130)]
        first.episode_window.add(kept)
        first.save_to_path(tmp_path / "checkpoint")
        first.stop()
        second = config.build_algo()
        assert not getattr(second, "episode_window", None) or not second.episode_window.episodes
        second.restore_from_path(tmp_path / "checkpoint")
        assert list(second.episode_window.episodes) == kept[-EPISODE_WINDOW:]
        second.stop()
    finally:
        ray.shutdown()
