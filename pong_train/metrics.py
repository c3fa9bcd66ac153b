"""Metric names: RLlib's result paths, the article's names as aliases, and stop criteria over both."""

from __future__ import annotations

import math
import numbers
from typing import Any

from pong_train.errors import UsageError, closest

# The article's (Ray 0.8.3) metric names -> the RLlib 2.60 result path that holds the same figure.
ALIASES: dict[str, str] = {
    "episode_reward_mean": "env_runners/episode_return_mean",
    "episode_reward_max": "env_runners/episode_return_max",
    "episode_reward_min": "env_runners/episode_return_min",
    "episode_len_mean": "env_runners/episode_len_mean",
    "episodes_total": "env_runners/num_episodes_lifetime",
    "timesteps_total": "env_runners/num_env_steps_sampled_lifetime",
}

# Result paths reported by every IMPALA result, usable as stop criteria.
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

STOP_METRICS: tuple[str, ...] = tuple(ALIASES) + RESULT_PATHS

# Episode statistics that RLlib leaves out of an iteration that finished no episode; like
# RLlib 0.8.3's 100-episode window, the last value carries over until a new episode ends.
CARRIED_OVER = ("episode_reward_mean", "episode_reward_max", "episode_reward_min", "episode_len_mean")


def validate_stop(stop: Any, field: str = "--stop") -> dict[str, float]:
    """Check stop criteria before Ray starts: a mapping of known metric names to numeric thresholds; the error
    names `field` (the flag, or the job file's key)."""
    if not isinstance(stop, dict):
        raise UsageError(f"{field}: must be a mapping of metric name to threshold, got {stop!r}")
    checked: dict[str, float] = {}
    for name, threshold in stop.items():
        if not isinstance(name, str):
            raise UsageError(f"{field}: metric names must be strings, got {name!r}")
        if name not in STOP_METRICS:
            match = closest(name, STOP_METRICS)
            hint = f"did you mean '{match}'?" if match else "known: " + ", ".join(STOP_METRICS)
            raise UsageError(f"{field}: unknown metric '{name}'; {hint}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise UsageError(f"{field}: threshold for '{name}' must be a finite number, got {threshold!r}")
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


class ResultRows:
    """Turns successive results of one run into rows: RLlib's paths plus the article's aliases."""

    def __init__(self) -> None:
        self._carried: dict[str, float] = {}

    def row(self, result: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = flatten(result)
        for alias, path in ALIASES.items():
            value = row.get(path)
            if value is not None and math.isfinite(value):
                row[alias] = value
                if alias in CARRIED_OVER:
                    self._carried[alias] = value
            elif alias in self._carried:
                row[alias] = self._carried[alias]
            else:
                row[alias] = None
        return complete(row)


COUNTS = ("episodes_total", "timesteps_total")


def complete(row: dict[str, Any]) -> dict[str, Any]:
    """Every alias present (None until known; the counts are whole numbers, 0 until the first), no NaN."""
    for alias in ALIASES:
        row.setdefault(alias, None)
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
