"""Result loggers a backend can hand out: a console line per result, and `metrics.jsonl`."""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from pong_train.job import ResultLogger

METRICS_FILE = "metrics.jsonl"


class JsonlLogger(ResultLogger):
    """Appends one whole JSON line per result; a crash can leave at most a torn last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")

    def log_result(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, allow_nan=False, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a `metrics.jsonl`, skipping a torn last line."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


class ConsoleLogger(ResultLogger):
    """One line per result: iteration, return, episodes, env steps, speed, elapsed time, stop progress."""

    def __init__(self, stop: dict[str, float], stream: TextIO = sys.stdout) -> None:
        self.stop = stop
        self.stream = stream
        self._last: tuple[float, float] | None = None

    def log_result(self, row: dict[str, Any]) -> None:
        steps, elapsed = int(row.get("timesteps_total") or 0), row.get("time_total_s") or 0.0
        last_steps, last_elapsed = self._last or (0, 0.0)
        rate = (steps - last_steps) / (elapsed - last_elapsed) if elapsed > last_elapsed else 0.0
        self._last = (steps, elapsed)
        progress = "  ".join(f"{name} {_fmt(row.get(name), '.4g')}/{limit:g}" for name, limit in self.stop.items())
        print(
            f"iter {row.get('training_iteration', 0):>4}  "
            f"episode_reward_mean {_fmt(row.get('episode_reward_mean')):>6}  "
            f"episodes {int(row.get('episodes_total') or 0):>5}  "
            f"env steps {steps:>9,}  {rate:>7,.0f} steps/s  "
            f"{datetime.timedelta(seconds=int(elapsed))}  stop: {progress}",
            file=self.stream,
            flush=True,
        )
