"""Stand-ins the conformance suite (pong_train.testing) plugs into a run: loggers that record the rows
they are handed or lose them all, an observer plugin, and a watch on the loggers a backend hands out."""

from __future__ import annotations

import json
from typing import Any, Callable

from pong_train import hookimpl
from pong_train.job import ResultLogger, Run
from pong_train.plugins import PluginManager


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as `metrics.jsonl` keeps it: what JSON makes of it."""
    return json.loads(json.dumps(row, default=str))


class RowRecorder(ResultLogger):
    """A logger that keeps a copy of every row it is handed; `on_row(count)` runs after each."""

    def __init__(self, on_row: Callable[[int], None] | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.closed = False
        self.on_row = on_row

    def log_result(self, row: dict[str, Any]) -> None:
        self.rows.append(plain(row))
        if self.on_row is not None:
            self.on_row(len(self.rows))

    def close(self) -> None:
        self.closed = True


class FailingLogger(ResultLogger):
    """A logger whose sink is always down: every row it is handed is lost."""

    def log_result(self, row: dict[str, Any]) -> None:
        raise ConnectionError("the conformance suite's sink is down on purpose")


class Observer:
    """A plugin that observes every run, as an MLflow-like plugin would: one logger per run."""

    def __init__(self, name: str, make_logger: Callable[[], ResultLogger]) -> None:
        self.__name__ = name  # the name the plugin manager registers it under
        self.make_logger = make_logger
        self.loggers: list[ResultLogger] = []

    @hookimpl
    def pong_train_result_loggers(self, run: Run) -> list[ResultLogger]:
        logger = self.make_logger()
        self.loggers.append(logger)
        return [logger]


class Recorded(ResultLogger):
    """Stands in for one of the backend's loggers: forwards every call and keeps each row the logger took."""

    def __init__(self, logger: ResultLogger) -> None:
        self.logger = logger
        self.rows: list[dict[str, Any]] = []
        self.changed_rows = 0
        self.closed = False

    def log_result(self, row: dict[str, Any]) -> None:
        before = plain(row)
        self.logger.log_result(row)  # what it raises goes to the core, as without the suite
        self.changed_rows += plain(row) != before
        self.rows.append(before)

    def close(self) -> None:
        self.closed = True
        self.logger.close()


class BackendLoggers:
    """Watches (through pluggy's hook-call monitoring) the loggers the backend's plugin hands out, and
    records the rows each one takes. The backend's code runs unchanged; its loggers are only wrapped."""

    def __init__(self, pm: PluginManager, plugin_name: str) -> None:
        self.plugin_name = plugin_name
        self.loggers: list[Recorded] = []
        self.calls = 0
        self.unattributed = False
        self.implemented = any(impl.plugin_name == plugin_name for impl in pm.impls("pong_train_result_loggers"))
        pm.add_hookcall_monitoring(lambda *_: None, self._after)

    def _after(self, outcome: Any, hook_name: str, impls: list, kwargs: Any) -> None:
        if hook_name != "pong_train_result_loggers" or outcome.exception is not None:
            return
        if not any(impl.plugin_name == self.plugin_name for impl in impls):
            return
        if len(impls) != 1:  # called together with other plugins: whose loggers are whose is unknown
            self.unattributed = True
            return
        self.calls += 1
        results = outcome.get_result()
        if not results or not results[0]:
            return
        wrapped = []
        for logger in results[0]:
            # Named like the logger it wraps, so that the core's warnings name the backend's class.
            recorded = type(type(logger).__name__, (Recorded,), {})(logger)
            self.loggers.append(recorded)
            wrapped.append(recorded)
        outcome.force_result([wrapped])
