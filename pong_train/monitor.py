"""The Tune glue on the driver's side: each result becomes a row for every logger, stop criteria are
checked on it, and Ctrl-C or SIGTERM turns into a checkpoint and a clean stop."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from pong_train.job import ResultLogger, Run
from pong_train.loggers import METRICS_FILE, ConsoleLogger, GuardedLogger, JsonlLogger
from pong_train.metrics import reached, reported_row
from pong_train.callbacks import rss_mb
from pong_train.rundir import PLACEMENT_FILE, write_json

@dataclasses.dataclass
class LiveRun:
    """What the process driving a run holds for it while it trains: its loggers (an experiment of several trials:
    each trial's, made at its first result), and the signal that interrupted it."""

    loggers: list[GuardedLogger]
    interrupted_by: int | None = None
    running_trials: int = 0
    """Trials training at the end of Tune's last step: an interrupted experiment ends once none is."""
    trial_loggers: dict[str, list[GuardedLogger]] = dataclasses.field(default_factory=dict)
    make_trial_loggers: Callable[[str, Path], list[GuardedLogger]] | None = None

    def loggers_of(self, trial_id: str, trial_dir: Path | None) -> list[GuardedLogger]:
        if self.make_trial_loggers is None or trial_dir is None:
            return self.loggers
        if trial_id not in self.trial_loggers:
            self.trial_loggers[trial_id] = self.make_trial_loggers(trial_id, trial_dir)
        return self.trial_loggers[trial_id]

    def all_loggers(self) -> list[GuardedLogger]:
        return [*self.loggers, *(logger for loggers in self.trial_loggers.values() for logger in loggers)]


LIVE_RUNS: dict[str, LiveRun] = {}
"""The runs this process drives, by run directory: the one registry of run-time state. It cannot live on the Tune
stopper and callback that need it: Tune pickles those into its experiment state, and a resumed run gets them back
unpickled, without loggers."""


def core_loggers(run: Run) -> list[ResultLogger]:
    """What every run (every trial of an experiment) gets whatever its backend: `metrics.jsonl`, and a console line
    unless --quiet."""
    console = [] if run.invocation.quiet else [ConsoleLogger(run.job.stop, trial=run.trial)]
    return [*console, JsonlLogger(run.run_dir / METRICS_FILE)]


class RunMonitor:
    """Driver-side bookkeeping of one run: rows, stop criteria, loggers, interruption."""

    def __init__(self, run: Run, plugin_loggers: Callable[[Run], list[tuple[str, ResultLogger]]]) -> None:
        self.run_dir = str(run.run_dir)
        self.stop = run.job.stop

        def guarded(each: Run) -> list[GuardedLogger]:
            return [GuardedLogger(logger) for logger in core_loggers(each)] + [
                GuardedLogger(logger, owner) for owner, logger in plugin_loggers(each)]

        self.latest: dict[str, dict] = {}
        if run.job.sweep is None:
            LIVE_RUNS[self.run_dir] = LiveRun(guarded(run))
        else:  # each trial is a run of its own folder, with its own loggers
            jobs = run.job.trials()
            LIVE_RUNS[self.run_dir] = LiveRun([], make_trial_loggers=lambda trial_id, trial_dir: guarded(dataclasses.replace(
                run, job=jobs[int(trial_dir.name.removeprefix("trial_"))], run_dir=trial_dir, trial=trial_dir.name)))

    def __getstate__(self) -> dict:
        return {"run_dir": self.run_dir, "stop": self.stop, "latest": {}}

    def should_stop(self, trial_id: str, result: dict) -> bool:
        self.latest[trial_id] = row = reported_row(result)
        # An interrupted run stops like a finished one, so Tune writes its checkpoint at the end.
        live = LIVE_RUNS.get(self.run_dir)
        return bool(reached(self.stop, row)) or (live is not None and live.interrupted_by is not None)

    def on_result(self, trial_id: str, result: dict, trial_dir: Path | None = None) -> None:
        row = self.latest.pop(trial_id, None) or reported_row(result)
        row["rss_mb/driver"] = rss_mb()
        live = LIVE_RUNS.get(self.run_dir)
        if result.get("placement"):  # in the trial's folder, in an experiment of several
            folder = trial_dir if live and live.make_trial_loggers and trial_dir else Path(self.run_dir)
            write_json(folder / PLACEMENT_FILE, result["placement"])
        for logger in live.loggers_of(trial_id, trial_dir) if live else []:
            logger.log_result(row)

    def should_stop_all(self) -> bool:
        """Interrupted, each running trial stops at its next result, with its checkpoint; then the experiment stops,
        its queued trials before they start."""
        live = LIVE_RUNS.get(self.run_dir)
        return live is not None and live.interrupted_by is not None and live.running_trials == 0

    def count_running(self, running: int) -> None:
        if live := LIVE_RUNS.get(self.run_dir):
            live.running_trials = running

    def tune_hooks(self) -> tuple[Any, Any]:
        """The Tune stopper and callback that drive this monitor (Tune calls the stopper first). Tune pickles both into
        its experiment state, these classes by value: they reach the run's state only through the monitor."""
        from ray import tune

        monitor = self

        class StopCriteria(tune.Stopper):
            def __call__(self, trial_id: str, result: dict) -> bool:
                return monitor.should_stop(trial_id, result)

            def stop_all(self) -> bool:
                return monitor.should_stop_all()

        class ForwardResults(tune.Callback):
            def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
                # The trial's folder in the run directory: its `local_path` is a staging folder of this Ray session,
                # copied over the run directory's, so a resumed session would start its metrics.jsonl afresh.
                monitor.on_result(trial.trial_id, result, Path(trial.path))

            def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
                monitor.count_running(sum(trial.status == "RUNNING" for trial in trials))

        return StopCriteria(), ForwardResults()


def close_loggers(run_dir: Path) -> dict[str, int]:
    """Close the run's loggers; returns {logger name: results it never took} for those that lost any."""
    lost = {}
    live = LIVE_RUNS.get(str(run_dir))
    for logger in live.all_loggers() if live else []:
        if count := logger.close():
            lost[logger.name] = count
    if live:
        live.loggers, live.trial_loggers = [], {}
    return lost


def interruption(run_dir: Path) -> int | None:
    """The signal that interrupted the run, if one did; the run is forgotten (call after close_loggers)."""
    live = LIVE_RUNS.pop(str(run_dir), None)
    return live.interrupted_by if live else None


@contextlib.contextmanager
def checkpoint_on_signal(run_dir: Path) -> Iterator[None]:
    """Ctrl-C or SIGTERM: finish the current iteration, checkpoint, stop. A second one aborts at once."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, _frame: Any) -> None:
        live = LIVE_RUNS.setdefault(str(run_dir), LiveRun(loggers=[]))
        if live.interrupted_by is not None:
            raise KeyboardInterrupt
        live.interrupted_by = signum
        print("pong-train: stopping after this iteration to save a checkpoint (again to abort)", file=sys.stderr)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
