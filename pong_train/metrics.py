"""Metric names: RLlib's result paths, the article's names as aliases, and stop criteria over both."""

from __future__ import annotations

import math
import numbers
from collections import deque
from typing import Any

from pong_train.errors import closest

EPISODE_WINDOW = 100
"""Finished episodes the article's episode statistics cover: RLlib 0.8.3's `metrics_smoothing_episodes`, across
iterations. (RLlib 2.60's `env_runners/episode_return_mean` covers only the episodes one iteration finished.)"""

WINDOW_STATS: tuple[str, ...] = ("episode_reward_mean", "episode_reward_max", "episode_reward_min", "episode_len_mean")
"""The article's episode statistics, over the last `EPISODE_WINDOW` finished episodes (see `EpisodeWindow`)."""

# The article's (Ray 0.8.3) counters -> the RLlib 2.60 result path that holds the same figure.
ALIASES: dict[str, str] = {
    "episodes_total": "env_runners/num_episodes_lifetime",
    "timesteps_total": "env_runners/num_env_steps_sampled_lifetime",
}

ARTICLE_NAMES: tuple[str, ...] = WINDOW_STATS + tuple(ALIASES)
"""Every name of the article's that a result carries."""

# Result paths reported by every result, usable as stop criteria; RLlib's episode paths keep RLlib's meaning.
RESULT_PATHS: tuple[str, ...] = (
    "training_iteration",
    "time_total_s",
    "num_env_steps_sampled_lifetime",
    "env_runners/episode_return_mean",
    "env_runners/episode_return_max",
    "env_runners/episode_return_min",
    "env_runners/episode_len_mean",
    "env_runners/num_episodes_lifetime",
    "env_runners/num_env_steps_sampled_lifetime",
    "env_runners/num_agent_steps_sampled_lifetime",
)

STOP_METRICS: tuple[str, ...] = ARTICLE_NAMES + RESULT_PATHS

FINISHED_EPISODES = "finished_episodes"
"""Under `env_runners/` in an algorithm's raw result: {"return", "length"} of each episode finished since the last
result (pong_train.callbacks reports them from each env runner)."""


class EpisodeWindow:
    """(return, length) of the last `size` finished episodes, across iterations, and the article's statistics
    over them; its `episodes` travel with each checkpoint, so a resumed run keeps its window."""

    def __init__(self, episodes: Any = (), size: int = EPISODE_WINDOW) -> None:
        self.episodes: deque[tuple[float, int]] = deque(
            ((float(ret), int(length)) for ret, length in episodes), maxlen=size)

    def add(self, finished: Any) -> None:
        self.episodes.extend((float(ret), int(length)) for ret, length in finished)

    def stats(self) -> dict[str, float]:
        """The article's statistics; empty until an episode has finished."""
        if not self.episodes:
            return {}
        returns = [ret for ret, _ in self.episodes]
        return {
            "episode_reward_mean": sum(returns) / len(returns),
            "episode_reward_max": max(returns),
            "episode_reward_min": min(returns),
            "episode_len_mean": sum(length for _, length in self.episodes) / len(self.episodes),
        }


def validate_stop(stop: Any) -> dict[str, float]:
    """Stop criteria as floats, if `stop` maps known metric names to finite thresholds, else a ValueError (the
    Job's check, which names the field)."""
    if not isinstance(stop, dict):
        raise ValueError(f"must be a mapping of metric name to threshold, got {stop!r}")
    checked: dict[str, float] = {}
    for name, threshold in stop.items():
        if not isinstance(name, str):
            raise ValueError(f"metric names must be strings, got {name!r}")
        if name not in STOP_METRICS:
            match = closest(name, STOP_METRICS)
            hint = f"did you mean '{match}'?" if match else "known: " + ", ".join(STOP_METRICS)
            raise ValueError(f"unknown metric '{name}'; {hint}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"threshold for '{name}' must be a finite number, got {threshold!r}")
        checked[name] = float(threshold)
    return checked


def flatten(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of an RLlib result as `a/b/c` paths (Tune's and TensorBoard's naming)."""
    flat: dict[str, float] = {}
    for key, value in result.items():
        path = f"{prefix}{key}"
        if key == "config":
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, path + "/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            # RLlib reports some figures as numpy scalars (float32), which are not Python floats.
            flat[path] = int(value) if isinstance(value, numbers.Integral) else float(value)
    return flat


def add_article_names(result: dict[str, Any], window: EpisodeWindow) -> None:
    """Put the article's names into an algorithm's raw result: the window's statistics, after adding the
    episodes this result reports finished, and the counters under their old names."""
    runners = result.get("env_runners") or {}
    finished = runners.pop(FINISHED_EPISODES, None)
    if isinstance(finished, dict):  # RLlib compiles a series of one item to the item itself
        finished = [finished]
    window.add((episode["return"], episode["length"]) for episode in finished or [])
    result.update(window.stats())
    flat = flatten(result)
    result.update({alias: flat[path] for alias, path in ALIASES.items() if path in flat})


COUNTS = ("episodes_total", "timesteps_total")


def complete(row: dict[str, Any]) -> dict[str, Any]:
    """Every alias present (None until known; the counts are whole numbers, 0 until the first), no NaN."""
    for name in ARTICLE_NAMES:
        row.setdefault(name, None)
    for count in COUNTS:
        row[count] = int(row[count] or 0)
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None
    return row


def reported_row(result: dict[str, Any]) -> dict[str, Any]:
    """The row of a result as Tune hands it to the driver: the algorithm added the aliases already."""
    return complete(flatten(result))


def reached(stop: dict[str, float], row: dict[str, Any]) -> list[str]:
    """The stop criteria this row meets (Tune's rule: any one stops the run)."""
    return [name for name, threshold in stop.items() if (row.get(name) is not None and row[name] >= threshold)]
