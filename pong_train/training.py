"""Training a job from this process: the one entry point every backend trains through.

Read top to bottom: check what can be checked, join or start the Ray cluster, fit the job to it,
open the run directory and its loggers, let Tune train, and turn how it ended into an exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from pong_train import progress, trials
from pong_train.cluster import check_local_gpus, connect, fit_to_cluster, trials_plan
from pong_train.errors import EXIT_FAILED, EXIT_LOST_RESULTS, EXIT_OK, last_line
from pong_train.job import Invocation, Job, ResultLogger, Run
from pong_train.metrics import reached, reported_row
from pong_train.monitor import RunMonitor, checkpoint_on_signal, close_loggers, interruption
from pong_train.plugins import with_plugins
from pong_train.rllib_config import algorithm_config, register_envs
from pong_train.rundir import TRIALS_FILE, check_storage, make_run_dir, plot_curve, record, record_trials, summary
from pong_train.trials import trial_folders

__all__ = ["run_training"]


def run_training(job: Job, invocation: Invocation | None = None) -> int:
    """Train `job` here, on the Ray cluster `invocation` names or an embedded one; returns the exit status.

    Checks everything checkable before creating the run directory, so bad input leaves nothing behind.
    With `invocation.resume_dir`, continues that run from its latest checkpoint. Without an invocation (or
    with one that has no plugin manager), the command's own is used, so every plugin's loggers run.
    """
    invocation = with_plugins(invocation)
    check_storage(job.storage_path)
    if not invocation.ray_address:
        check_local_gpus(job.config)
    progress.show_notes(invocation.notes)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's banners would interleave with the result lines
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # checkpoint_on_signal handles Ctrl-C
    import ray

    joining = "joining the Ray cluster" if invocation.ray_address else "starting an embedded Ray cluster"
    with progress.step(joining, quiet=invocation.quiet):
        connect(invocation.ray_address, invocation.debug, invocation.dashboard)
    try:
        job = job.model_copy(update={"config": fit_to_cluster(job.config)})
        trial_configs = [fit_to_cluster(trial.config) for trial in job.trials()]  # each refused before any starts
        if job.sweep is not None and not invocation.quiet:
            print(trials_plan(trial_configs, job.max_concurrent_trials))
        run = Run(job=job, run_dir=invocation.resume_dir or make_run_dir(job), invocation=invocation)
        record(run, "running")
        register_envs()
        monitor = RunMonitor(run, plugin_loggers)
        try:
            trainer = tuner(run, monitor, trial_configs)
            if (done := stopped_at_checkpoint(run, trainer)) is not None:
                say(f"its latest checkpoint (iteration {done}) already met the stop criteria; nothing left to train")
                results = trainer.get_results()
            else:
                with checkpoint_on_signal(run.run_dir):
                    results = trainer.fit()
        finally:
            for folder in curve_folders(run):  # before the loggers close, so that they can keep them
                plot_curve(folder)
            lost = close_loggers(run.run_dir)
        return finish(run, results, lost)
    finally:
        ray.shutdown()


def plugin_loggers(run: Run) -> list[tuple[str, ResultLogger]]:
    """(owner, logger) for every logger the plugins hand out for this run, beside the core's own.

    A plugin that refuses the run (bad input, or its hook failed) leaves no new run directory behind.
    """
    plugins = run.invocation.plugin_manager
    try:
        handed_out = [(plugins.label(name), logger)
                      for name, loggers in plugins.results("pong_train_result_loggers", run=run)
                      for logger in loggers or []]
    except Exception:
        if run.invocation.resume_dir is None:
            shutil.rmtree(run.run_dir, ignore_errors=True)
        raise
    return handed_out


def tuner(run: Run, monitor: RunMonitor, trial_configs: list[Any]) -> Any:
    """A Tune tuner that trains the run's trials (`trial_configs`, fitted to the cluster) from scratch, or restores
    it from its latest checkpoints."""
    from ray import tune

    from pong_train.rundir import best_checkpoint_keeper

    algo_config = algorithm_config(run.job.config, run.job.env, run.job.run)
    if run.invocation.resume_dir:
        resume_all = tune.ResumeConfig(
            finished=tune.ResumeConfig.ResumeType.RESUME,
            unfinished=tune.ResumeConfig.ResumeType.RESUME,
            errored=tune.ResumeConfig.ResumeType.RESUME,
        )
        with progress.step(f"restoring {run.run_dir} from its latest checkpoint", quiet=run.invocation.quiet):
            return tune.Tuner.restore(str(run.run_dir), algo_config.algo_class, _resume_config=resume_all)
    stopper, forwarder = monitor.tune_hooks()
    sweep = run.job.sweep
    return tune.Tuner(
        algo_config.algo_class,
        param_space=algo_config if sweep is None else trials.param_space(
            [algorithm_config(config, run.job.env, run.job.run).to_dict() for config in trial_configs]),
        tune_config=tune.TuneConfig(max_concurrent_trials=run.job.max_concurrent_trials,
                                    scheduler=trials.scheduler(run.job.scheduler, run.job.scheduler_grace_steps,
                                                               run.job.stop),
                                    trial_dirname_creator=None if sweep is None else trials.trial_folder),
        run_config=tune.RunConfig(
            name=run.run_dir.name,
            storage_path=str(run.run_dir.parent),
            stop=stopper,
            # Tune keeps the latest checkpoints, or the best-scoring ones, never both: the best is copied aside.
            callbacks=[forwarder, best_checkpoint_keeper()],
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=run.job.checkpoint_freq,
                checkpoint_at_end=True,
                num_to_keep=run.job.checkpoint_keep,
            ),
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def stopped_at_checkpoint(run: Run, trainer: Any) -> int | None:
    """The iteration of a resumed run's latest checkpoint if that result met the stop criteria, else None.

    A run killed after its last iteration was checkpointed, but before it ended, has nothing left to train;
    restored, Tune would train one iteration past its stop.
    """
    if not run.invocation.resume_dir:
        return None
    trials = trainer.get_results()
    latest = trials[0] if len(trials) == 1 else None
    if latest is None or latest.checkpoint is None:
        return None
    at_checkpoint = [metrics for checkpoint, metrics in latest.best_checkpoints
                     if checkpoint.path == latest.checkpoint.path]
    if at_checkpoint and reached(run.job.stop, reported_row(at_checkpoint[0])):
        return at_checkpoint[0].get("training_iteration")
    return None


def finish(run: Run, results: Any, lost: dict[str, int]) -> int:
    """Record how the run ended in run.json (and trials.json) and turn it into an exit status (documented in the
    README): an experiment of several trials fails if any trial failed, after the others have finished."""
    signum = interruption(run.run_dir)
    resume_hint = f"resume with: pong-train --resume {run.run_dir}"
    failed = {Path(result.path).name: result.error for result in results if result.error is not None}
    if failed:
        for trial, error in failed.items():
            say(f"{'training' if run.job.sweep is None else trial} failed: {last_line(error)}")
        say(f"details in {run.run_dir}; {resume_hint}")
        status, code = "failed", EXIT_FAILED
    elif signum is not None:
        say(f"checkpoint saved; {resume_hint}")
        status, code = "interrupted", 128 + signum
    elif lost:
        losses = ", ".join(f"{name} lost {count}" for name, count in lost.items())
        say(f"training finished and its checkpoints are kept, but results were lost: {losses}")
        status, code = "lost-results", EXIT_LOST_RESULTS
    else:
        status, code = "completed", EXIT_OK
    if code in (EXIT_OK, EXIT_LOST_RESULTS):
        print(f"run directory: {run.run_dir}")
    record(run, status)
    ended = summary(run, status)
    if run.job.sweep is not None:
        ended["trials"] = record_trials(run, set(failed))
        say_best(run, ended["trials"])
    if run.invocation.json_summary:
        print(json.dumps(ended))
    return code


def curve_folders(run: Run) -> list[Path]:
    """Where the run's curves go: the run directory, and each trial's folder in an experiment of several."""
    return [run.run_dir, *trial_folders(run.run_dir)]


def say_best(run: Run, lines: list[dict[str, Any]]) -> None:
    """One line naming the trial with the highest episode_reward_mean, and where all are."""
    scored = [line for line in lines if line["best_episode_reward_mean"] is not None]
    if scored:
        best = max(scored, key=lambda line: line["best_episode_reward_mean"])
        print(f"{len(lines)} trials; best: {best['trial']} {best['settings']} "
              f"(episode_reward_mean {best['best_episode_reward_mean']:.1f}); all in {run.run_dir / TRIALS_FILE}")


def say(line: str) -> None:
    print(f"pong-train: {line}", file=sys.stderr)
