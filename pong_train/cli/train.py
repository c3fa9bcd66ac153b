"""`pong-train [OPTIONS]`: the root command, which trains (the article's flags) when no subcommand is given."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from pong_train import __version__, config as cfg, user_config
from pong_train.errors import UsageError
from pong_train.job import Invocation, Job
from pong_train.plugin_options import by_plugin, check_owners, kept_options, owners
from pong_train.rundir import resumable_job

EXAMPLES = """\b
Examples:
  pong-train --preset smoke                       a quick run on this machine
  pong-train --run IMPALA --env PongNoFrameskip-v4 \\
      --config '{"num_gpus": 0, "num_workers": 3}' \\
      --stop '{"episode_reward_mean": 18, "time_total_s": 3600}'
  pong-train --preset smoke --ray-address 127.0.0.1:6379
  pong-train --resume runs/IMPALA_PongNoFrameskip-v4_20260101-120000
  pong-train backends                             list the installed backends
"""

@click.group(invoke_without_command=True, epilog=EXAMPLES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--run", default="IMPALA", show_default=True, type=click.Choice(cfg.ALGORITHMS, case_sensitive=False),
              help="RLlib algorithm: IMPALA (the article's) or APPO (IMPALA with PPO's clipped, reused updates).")
@click.option("--env", default="PongNoFrameskip-v4", show_default=True,
              help="ALE environment id (PongNoFrameskip-v4, ALE/Pong-v5, any ALE game).")
@click.option("--config", "config_json", metavar="JSON",
              help="Training settings as JSON; the article's RLlib 0.8.3 keys are translated.")
@click.option("--config-file", type=click.Path(path_type=Path, dir_okay=False),
              help="YAML or JSON file with the same keys as --config (and an optional 'stop').")
@click.option("--stop", "stop_json", metavar="JSON",
              help='Stop criteria as JSON, e.g. \'{"episode_reward_mean": 18, "time_total_s": 3600}\'.')
@click.option("--preset", type=click.Choice([p for p in cfg.PRESETS if p != "default"]),
              help="Named starting settings: smoke (a quick run), article (the article's settings), "
                   "fast-gpu (time to score on 16 cores and a GPU).")
@click.option("--backend", default="local", show_default=True, help="Where the job runs and where its metrics go.")
@click.option("--ray-address", metavar="HOST:PORT", help="Join this Ray cluster instead of starting one.")
@click.option("--storage-path", default=Path("runs"), show_default=True, type=click.Path(path_type=Path),
              help="Folder that receives the run directory.")
@click.option("--checkpoint-freq", type=click.IntRange(min=0),
              help="Checkpoint every N iterations [default: about every 5 minutes].")
@click.option("--checkpoint-keep", default=3, show_default=True, type=click.IntRange(min=1),
              help="Checkpoints kept (the latest ones).")
@click.option("--num-samples", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Trials: the --config grid repeated, its random spaces sampled, N times (Tune's num_samples); "
                   "each trial gets its own seed unless one is given.")
@click.option("--max-concurrent-trials", type=click.IntRange(min=1), metavar="N",
              help="Trials trained at once at most [default: as many as the cluster's CPUs fit].")
@click.option("--scheduler", type=click.Choice(["asha"]),
              help="Stop trials early whose episode_reward_mean trails the others' (Tune's ASHA) [default: none].")
@click.option("--scheduler-grace-steps", default=1_000_000, show_default=True, type=click.IntRange(min=1),
              metavar="N", help="Agent steps every trial trains before --scheduler may stop it.")
@click.option("--name", help="Experiment name; the run directory is NAME_<timestamp>.")
@click.option("--resume", type=click.Path(path_type=Path, file_okay=False), metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from its latest checkpoint.")
@click.option("--job", "job_file", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Run the job saved in FILE (a job.json), as a backend does on the machines it runs jobs on.")
@click.option("--dashboard", is_flag=True, help="Start Ray's dashboard on 127.0.0.1 (embedded cluster).")
@click.option("--debug", is_flag=True, help="Show tracebacks and Ray's own logs.")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no per-result lines; errors and summary only.")
@click.option("--json", "json_summary", is_flag=True, help="End with a one-line JSON summary of the run.")
@click.version_option(__version__, "--version", prog_name="pong-train")
@click.pass_context
def cli(ctx: click.Context, **params: Any) -> int | None:
    """Train an IMPALA (or APPO) agent on Atari Pong with Ray RLlib.

    With no subcommand, trains: on an embedded Ray cluster (default), an existing one
    (--ray-address), or wherever --backend sends the job.
    """
    if ctx.invoked_subcommand is not None:
        return None
    plugins, options = ctx.obj, ctx.command.params
    owned = owners(options)
    core = {k: v for k, v in params.items() if k not in owned}
    given = {k for k in params if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    invocation = Invocation(plugin_manager=plugins, ray_address=core["ray_address"], dashboard=core["dashboard"],
                            debug=core["debug"], quiet=core["quiet"], json_summary=core["json_summary"],
                            resume_dir=core["resume"] and core["resume"].resolve())
    if core["resume"] or core["job_file"]:
        job = saved_job(ctx, plugins, core, given, by_plugin(options, params, only=given))
        check_owners(options, plugins, job.backend, given)
    else:
        check_backend(plugins, core["backend"])
        check_owners(options, plugins, core["backend"], given)  # before the options are validated
        notes: list[str] = []
        job = build_job(plugins, core, by_plugin(options, params), notes)
        invocation = invocation.but(notes=tuple(notes))
    status = plugins.launch(job, invocation)
    if status is None:
        raise UsageError(f"no installed plugin launches backend '{job.backend}'")
    return status


def check_backend(plugins: Any, name: str) -> None:
    known = plugins.backends()
    if name not in known:
        raise UsageError(f"backend '{name}' is not installed; installed: {', '.join(sorted(known))} "
                         "(pong-train backends lists them)")


def stop_criteria(stop_json: str | None, file_stop: Any, preset: dict[str, Any]) -> tuple[Any, str]:
    """The stop criteria as given (the Job checks them) and the flag they came from."""
    if stop_json is not None:
        return user_config.parse_json_arg(stop_json, "--stop"), "--stop"
    if file_stop is not None:
        return file_stop, "--config-file: 'stop'"
    return preset.get("stop", cfg.DEFAULT_STOP), "--preset"


def build_job(plugins: Any, params: dict[str, Any], plugin_values: dict[str, dict], notes: list[str]) -> Job:
    """Resolve defaults < preset < config file < --config into a validated Job, adding a note per translated key.
    The caller has checked the backend and whose options were given."""
    preset = cfg.PRESETS[params["preset"] or "default"]
    layers = [user_config.translate(preset.get("config", {}), f"preset {params['preset']}", notes)]
    file_stop = None
    if params["config_file"] is not None:
        data = user_config.load_config_file(params["config_file"])
        file_stop = data.pop("stop", None)
        layers.append(user_config.translate(data, f"--config-file {params['config_file']}", notes))
    if params["config_json"] is not None:
        layers.append(user_config.translate(user_config.parse_json_arg(params["config_json"], "--config"), "--config", notes))
    train_config, sweep = cfg.build_experiment(layers, params["run"], params["num_samples"])
    stop, stop_flag = stop_criteria(params["stop_json"], file_stop, preset)
    checkpoint_freq = params["checkpoint_freq"]
    if checkpoint_freq is None:  # about five minutes of work between checkpoints
        checkpoint_freq = preset.get("checkpoint_freq", math.ceil(300 / max(train_config.min_time_s_per_iteration, 1)))
    return Job.from_flags(dict(
        backend=params["backend"], run=params["run"], env=params["env"], config=train_config, stop=stop,
        storage_path=params["storage_path"], checkpoint_freq=checkpoint_freq, checkpoint_keep=params["checkpoint_keep"],
        name=params["name"], sweep=sweep, max_concurrent_trials=params["max_concurrent_trials"],
        scheduler=params["scheduler"], scheduler_grace_steps=params["scheduler_grace_steps"],
        options=kept_options(plugins, plugin_values),
    ), flags={"stop": stop_flag})


def saved_job(ctx: click.Context, plugins: Any, params: dict[str, Any], given: set[str],
              given_options: dict[str, dict]) -> Job:
    """The job of an earlier run (--resume) or of a job file (--job), with the plugin options this command
    line gives laid over the saved ones; the rest of the command line may only say how to run it."""
    flag = "--resume" if params["resume"] else "--job"
    if params["resume"] and params["job_file"]:
        raise UsageError("--resume and --job both name a job; give one")
    how_to_run = {field.name for field in dataclasses.fields(Invocation)} | {"resume", "job_file"}
    refused = [p.opts[0] for p in ctx.command.params if p.name in given and p.name in params and p.name not in how_to_run]
    if refused:
        raise UsageError(f"{flag} runs a job with its own settings; drop {', '.join(refused)}")
    job = resumable_job(params["resume"]) if params["resume"] else Job.load(params["job_file"])
    if not any(name == job.backend for name in plugins.backends()):
        raise UsageError(f"{flag}: the job's backend '{job.backend}' is not installed")
    laid_over = {plugin: {**job.options.get(plugin, {}), **values} for plugin, values in given_options.items() if values}
    return job.model_copy(update={"options": {**job.options, **kept_options(plugins, laid_over)}})
