"""Metric names: the article's aliases over RLlib's result paths, and stop criteria validated up front."""

from __future__ import annotations

import math

import pytest

from pong_train.errors import UsageError
from pong_train.metrics import ALIASES, ResultRows, reached, validate_stop

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
    with pytest.raises(UsageError, match=hint):
        validate_stop(bad)


@pytest.mark.parametrize("bad, hint", [({"episode_rewrd_mean": 18}, "episode_reward_mean"),
                                       ({"time_total": 10}, "time_total_s"),
                                       ({"episode_reward_mean": "high"}, "finite number"),
                                       ({"episode_reward_mean": float("nan")}, "finite number")])
def test_bad_stop_criteria_are_refused_with_a_hint(bad, hint):
    with pytest.raises(UsageError, match=hint):
        validate_stop(bad)


def test_rows_carry_rllib_paths_and_the_article_aliases():
    rows = ResultRows()
    row = rows.row(rllib_result(1, 1, 800, -20.0))
    assert row["env_runners/episode_return_mean"] == -20.0
    assert row["episode_reward_mean"] == -20.0
    assert row["episodes_total"] == 1 and row["timesteps_total"] == 800
    assert "config/lr" not in row
    assert set(ALIASES) <= set(row)


def test_episode_return_carries_over_an_iteration_without_episodes():
    rows = ResultRows()
    rows.row(rllib_result(1, 1, 800, -20.0))
    row = rows.row(rllib_result(2, 1, 1600, math.nan))
    assert row["episode_reward_mean"] == -20.0
    assert row["env_runners/episode_return_mean"] is None  # RLlib's own path stays as reported


def test_stop_criteria_compare_on_either_name():
    row = ResultRows().row(rllib_result(3, 5, 2400, 19.0))
    assert reached({"episode_reward_mean": 18}, row) == ["episode_reward_mean"]
    assert reached({"env_runners/num_episodes_lifetime": 6, "training_iteration": 3}, row) == ["training_iteration"]
    assert reached({"episode_reward_mean": 20}, row) == []


def test_numpy_scalars_count_as_numbers():
    import numpy as np

    row = ResultRows().row(rllib_result(1, np.int64(3), np.int64(900), np.float32(-20.5)))
    assert row["episode_reward_mean"] == -20.5 and type(row["episode_reward_mean"]) is float
    assert row["episodes_total"] == 3 and type(row["episodes_total"]) is int


def test_cpu_share_is_cpu_time_per_wall_second_and_skips_a_restarted_process():
    import time

    from pong_train.callbacks import CpuShare

    share = CpuShare()
    assert share.shares({"learner": 10.0, "env_runner_1": 5.0}) == {}  # nothing to compare with yet
    time.sleep(0.2)
    shares = share.shares({"learner": 10.2, "env_runner_1": 0.1})  # env runner 1 was replaced: its clock restarted
    assert set(shares) == {"learner"} and 0.5 < shares["learner"] <= 1.0
