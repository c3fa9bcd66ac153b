"""Result loggers: the core's own (a console line per result, `metrics.jsonl`) and the guard every logger runs
behind."""

from __future__ import annotations

import collections
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from pong_train.job import ResultLogger

METRICS_FILE = "metrics.jsonl"


class JsonlLogger(ResultLogger):
    """Appends one whole JSON line per result; a crash can leave at most a torn last line.

    On a resumed run, the first new result drops the rows from its iteration on (written after the
    checkpoint it resumed from), so every iteration appears exactly once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def log_result(self, row: dict[str, Any]) -> None:
        if self._file is None:
            self._drop_rows_from(row["training_iteration"])
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(row, allow_nan=False, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def _drop_rows_from(self, iteration: int) -> None:
        if not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r.get("training_iteration", 0) < iteration]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(r, allow_nan=False, default=str) + "\n" for r in kept)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class GuardedLogger(ResultLogger):
    """Keeps a failing logger from stopping training: failures are caught, counted, reported once
    per kind, and retried with exponential backoff; results wait in order until the logger recovers."""

    MAX_BUFFERED = 100_000

    def __init__(self, logger: ResultLogger, owner: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.name = type(logger).__name__ + (f" (from {owner})" if owner else "")
        self.clock = clock
        self.pending: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.MAX_BUFFERED)
        self.failures: collections.Counter[str] = collections.Counter()
        self._retry_at = 0.0
        self._backoff = 1.0

    def log_result(self, row: dict[str, Any]) -> None:
        self.pending.append(row)
        if self.clock() >= self._retry_at:
            self._deliver()

    def _deliver(self) -> bool:
        while self.pending:
            try:
                self.logger.log_result(self.pending[0])
            except Exception as err:  # a metrics sink must never stop training
                kind = type(err).__name__
                if not self.failures[kind]:
                    print(f"warning: metric logger {self.name} failed ({kind}: {err}); "
                          "retrying with backoff, results are kept until it recovers", file=sys.stderr)
                self.failures[kind] += 1
                self._retry_at = self.clock() + self._backoff
                self._backoff = min(self._backoff * 2, 60.0)
                return False
            self.pending.popleft()
            self._backoff = 1.0
        return True

    def close(self) -> int:
        """Deliver what waits, close the logger; returns how many results it never took."""
        lost = 0 if self._deliver() else len(self.pending)
        if lost:
            print(f"warning: metric logger {self.name} lost {lost} result(s) it could not "
                  f"take ({sum(self.failures.values())} failures)", file=sys.stderr)
        try:
            self.logger.close()
        except Exception as err:
            print(f"warning: metric logger {self.name} failed to close ({type(err).__name__}: {err})",
                  file=sys.stderr)
        return lost


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

    def __init__(self, stop: dict[str, float], stream: TextIO | None = None, trial: str = "") -> None:
        self.stop = stop
        self.stream = stream
        self.trial = trial
        """The trial's name, at the head of each line, in an experiment of several."""
        self._last: tuple[float, float] | None = None

    def log_result(self, row: dict[str, Any]) -> None:
        steps, elapsed = int(row.get("timesteps_total") or 0), row.get("time_total_s") or 0.0
        last_steps, last_elapsed = self._last or (0, 0.0)
        rate = (steps - last_steps) / (elapsed - last_elapsed) if elapsed > last_elapsed else 0.0
        self._last = (steps, elapsed)
        progress = "  ".join(f"{name} {_fmt(row.get(name), '.4g')}/{limit:g}" for name, limit in self.stop.items())
        print(
            f"{self.trial + '  ' if self.trial else ''}iter {row.get('training_iteration', 0):>4}  "
            f"episode_reward_mean {_fmt(row.get('episode_reward_mean')):>6}  "
            f"episodes {int(row.get('episodes_total') or 0):>5}  "
            f"env steps {steps:>9,}  {rate:>7,.0f} steps/s  "
            f"{datetime.timedelta(seconds=int(elapsed))}  stop: {progress}",
            file=self.stream or sys.stdout,  # at log time: a redirected stdout is honoured
            flush=True,
        )
