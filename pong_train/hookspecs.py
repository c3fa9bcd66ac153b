"""Every hook a pong-train plugin can implement, in the order they are called."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pong_train import hookspec

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

    from pong_train.job import Backend, Invocation, Job, ResultLogger, Run


@hookspec
def pong_train_backends() -> list[Backend]:
    """Declare the backends this plugin provides.

    When: once per command, as soon as the plugin manager is built, before the command line
    is parsed (the names become the choices of `--backend`, and `pong-train backends` lists them).
    Process: the `pong-train` command's own process.

    :return: a list of :class:`pong_train.job.Backend` (name and one-line description); an empty
        list, or no implementation, for a plugin that only observes results.

    All plugins are called; a name declared twice is an error.
    """


@hookspec
def pong_train_cli_options() -> list[type[BaseModel]]:
    """Add options to the training command line.

    When: once per command, before the command line is parsed.
    Process: the `pong-train` command's own process.

    :return: a list holding the plugin's options model, a pydantic model class whose fields
        are annotated with :class:`pong_train.plugin_options.Flag` (``Annotated[int,
        Flag("--mine-nodes")] = 2``; the field's docstring is the option's help): the core
        builds the options from it, validates the values with it (one line naming the flag,
        exit 2, for a value it refuses) and keeps them as ``job.options[<plugin name>]``, a
        dict by field name, so ``Model.model_validate(job.options[<plugin name>])`` gives them
        back typed. Anything else sets the plugin aside. Name options after the plugin
        (``--azureml-...``) unless they are the plugin's main vocabulary; a clash with a core
        option is an error. Options are listed in ``--help`` under the plugin's name; beside
        ``--resume`` and ``--job`` the ones given are laid over the saved job's.

    All plugins are called.
    """


@hookspec
def pong_train_cli_commands() -> list[click.Command]:
    """Add subcommands to `pong-train` (`pong-train azureml status JOB`, ...).

    When: once per command, before the command line is parsed.
    Process: the `pong-train` command's own process.

    :return: a list of :class:`click.Command` (a :class:`click.Group` for several under one name).
        A name that is already a subcommand is an error.

    All plugins are called.
    """


@hookspec(firstresult=True)
def pong_train_launch(job: Job, invocation: Invocation) -> int | None:
    """Execute the job where this backend executes jobs.

    When: once, after the command line and all training settings were validated (config keys,
    stop criteria, env id), and before anything is written or any Ray cluster is touched.
    Process: the `pong-train` command's own process; a backend that runs the job elsewhere
    (a cloud cluster) submits it from here and may wait for it.

    :param job: the resolved :class:`pong_train.job.Job`, what is to be trained; ``job.backend``
        is the name chosen with ``--backend``.
    :param invocation: the :class:`pong_train.job.Invocation`, how this command runs it (the
        plugin manager, ``--ray-address``, ``--quiet``, ``--debug``, ``--json``, the run being
        resumed, and the ``notes`` on translated settings, which the backend shows with
        :func:`pong_train.progress.show_notes` once it accepts the job). An implementation may
        leave this parameter out.

    To train in this process, call :func:`pong_train.training.run_training` with both (given the job
    alone, it takes this call's invocation, so every plugin's loggers still run): the run
    directory then gets the core's outputs (``metrics.jsonl``, ``job.json``, ``run.json``,
    ``placement.json``, ``curve.png``) and the console its line per result. To train elsewhere,
    ship the job there with ``job.save(path)`` and run ``python -m pong_train --job FILE`` on
    that machine (with ``--quiet``/``--debug`` as the invocation has them: they are not saved).
    :return: the exit status of the job, or None when ``job.backend`` is not one of this
        plugin's backends.

    Stops at the first non-None result: exactly one backend runs each job. Raise
    :class:`pong_train.errors.UsageError` for bad input (one line, exit code 2); any other
    exception is reported in one line naming the plugin's distribution, version and this hook
    (exit code 1; the traceback with ``--debug``).
    """


@hookspec
def pong_train_result_loggers(run: Run) -> list[ResultLogger]:
    """Hand out loggers that receive every training result of a run.

    When: once per run, after the run directory was created and before the first training
    iteration. In an experiment of several trials (search spaces in ``--config``, ``--num-samples``):
    once per trial, at its first result, with ``run.trial`` its name, ``run.run_dir`` its folder
    (``trial_<index>`` in the run directory) and ``run.job`` its own job (its settings, no sweep).
    Process: the process that drives training (where :func:`pong_train.training.run_training`
    runs: this machine for the local backend, the head node of the job for a cloud backend).

    :param run: the :class:`pong_train.job.Run`: its job (``run.job.backend`` says which backend
        runs it) and its run directory.
    :return: a list of :class:`pong_train.job.ResultLogger`, added to the core's own (the
        console line and ``metrics.jsonl``, which every run gets). A backend returns the loggers
        that send its runs' metrics where it keeps them, for its own runs only (check
        ``run.job.backend``); a plugin that observes every run returns its loggers for any run.

    All plugins are called and every logger receives every result, in order, behind a guard:
    a logger that raises is retried with backoff, and one that still holds results when
    training ends makes the run exit 3.
    """
