"""The `pong-train` command line: training by default (the article's flags), subcommands for the rest."""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from pong_train import __version__, config as cfg, progress
from pong_train.atari import validate_env_id
from pong_train.training import validate_address
from pong_train.errors import UsageError
from pong_train.job import Job
from pong_train.metrics import validate_stop
from pong_train.plugins import backends, distribution_of, get_plugin_manager, results_by_plugin

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


def _train_args(ctx: click.Context) -> list[str]:
    """The core training options exactly as given on the command line."""
    args: list[str] = []
    for param in ctx.command.params:
        if getattr(param, "pong_train_plugin", None) or not isinstance(param, click.Option):
            continue
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if not param.is_flag:
            args += [param.opts[0], str(value)]
        elif value:
            args.append(param.opts[0])
    return args


def _stop_criteria(stop_json: str | None, file_stop: Any, preset: dict[str, Any]) -> dict[str, float]:
    if stop_json is not None:
        return validate_stop(cfg.parse_json_arg(stop_json, "--stop"))
    if file_stop is not None:
        if not isinstance(file_stop, dict):
            raise UsageError("--config-file: 'stop' must be a mapping of metric name to threshold")
        return validate_stop(file_stop)
    return validate_stop(preset.get("stop", cfg.DEFAULT_STOP))


def build_job(ctx: click.Context, pm: Any, params: dict[str, Any], plugin_options: dict[str, Any]) -> Job:
    """Resolve defaults < preset < config file < --config into a validated Job, printing a note per translated key."""
    preset = cfg.PRESETS[params["preset"] or "default"]
    notes: list[str] = []
    layers = [cfg.translate(preset.get("config", {}), f"preset {params['preset']}", notes)]
    file_stop = None
    if params["config_file"] is not None:
        data = cfg.load_config_file(params["config_file"])
        file_stop = data.pop("stop", None)
        layers.append(cfg.translate(data, f"--config-file {params['config_file']}", notes))
    if params["config_json"] is not None:
        layers.append(cfg.translate(cfg.parse_json_arg(params["config_json"], "--config"), "--config", notes))
    train_config = cfg.build_config(layers)
    stop = _stop_criteria(params["stop_json"], file_stop, preset)
    validate_env_id(params["env"])
    if params["ray_address"] is not None:
        validate_address(params["ray_address"])
    checkpoint_freq = params["checkpoint_freq"]
    if checkpoint_freq is None:
        # About five minutes of work between checkpoints.
        checkpoint_freq = preset.get("checkpoint_freq", math.ceil(300 / max(train_config.min_time_s_per_iteration, 1)))
    return Job(
        backend=params["backend"],
        run=params["run"],
        env=params["env"],
        config=train_config,
        stop=stop,
        storage_path=params["storage_path"],
        ray_address=params["ray_address"],
        checkpoint_freq=checkpoint_freq,
        checkpoint_keep=params["checkpoint_keep"],
        name=params["name"],
        dashboard=params["dashboard"],
        debug=params["debug"],
        json_summary=params["json_summary"],
        train_args=_train_args(ctx),
        options=plugin_options,
        notes=notes,
        hook=pm.hook,
    )


RESUME_KEEPS = {"resume", "ray_address", "debug", "dashboard", "quiet", "json_summary"}


def resume_job(ctx: click.Context, pm: Any, params: dict[str, Any]) -> Job:
    """The Job of an earlier run, from its run.json, to continue from its latest checkpoint."""
    run_dir: Path = params["resume"]
    given = [p.opts[0] for p in ctx.command.params
             if p.name not in RESUME_KEEPS and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
    if given:
        raise UsageError(f"--resume continues a run with its own settings; drop {', '.join(given)}")
    from pong_train.training import RUN_FILE

    try:
        record = json.loads((run_dir / RUN_FILE).read_text())
        config = cfg.TrainConfig(**record["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"--resume {run_dir}: not a pong-train run directory ({type(err).__name__}: {err})") from None
    if record.get("status") == "completed":
        raise UsageError(f"--resume {run_dir}: nothing to resume, the run already reached its stop criteria")
    if record["backend"] not in backends(pm):
        raise UsageError(f"--resume {run_dir}: its backend '{record['backend']}' is not installed")
    return Job(
        backend=record["backend"], run=record["run"], env=record["env"], config=config, stop=record["stop"],
        storage_path=run_dir.resolve().parent, ray_address=params["ray_address"] or record.get("ray_address"),
        checkpoint_freq=record["checkpoint_freq"], checkpoint_keep=record["checkpoint_keep"], name=record["name"],
        dashboard=params["dashboard"], debug=params["debug"], json_summary=params["json_summary"],
        options=record.get("options", {}),
        resume_dir=run_dir.resolve(), hook=pm.hook,
    )


def build_cli(pm: Any) -> click.Group:
    known = backends(pm)

    @click.group(
        invoke_without_command=True,
        epilog=EXAMPLES,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    @click.option("--run", default="IMPALA", show_default=True, type=click.Choice(["IMPALA"], case_sensitive=False),
                  help="RLlib algorithm.")
    @click.option("--env", default="PongNoFrameskip-v4", show_default=True,
                  help="ALE environment id (PongNoFrameskip-v4, ALE/Pong-v5, any ALE game).")
    @click.option("--config", "config_json", metavar="JSON",
                  help="Training settings as JSON; the article's RLlib 0.8.3 keys are translated.")
    @click.option("--config-file", type=click.Path(path_type=Path, dir_okay=False),
                  help="YAML or JSON file with the same keys as --config (and an optional 'stop').")
    @click.option("--stop", "stop_json", metavar="JSON",
                  help='Stop criteria as JSON, e.g. \'{"episode_reward_mean": 18, "time_total_s": 3600}\'.')
    @click.option("--preset", type=click.Choice([p for p in cfg.PRESETS if p != "default"]),
                  help="Named starting settings: smoke (a quick run), seed (the article's settings), "
                       "fast-gpu (time to score on 16 cores and a GPU).")
    @click.option("--backend", default="local", show_default=True, type=click.Choice(sorted(known)),
                  help="Where the job runs and where its metrics go.")
    @click.option("--ray-address", metavar="HOST:PORT", help="Join this Ray cluster instead of starting one.")
    @click.option("--storage-path", default=Path("runs"), show_default=True, type=click.Path(path_type=Path),
                  help="Folder that receives the run directory.")
    @click.option("--checkpoint-freq", type=click.IntRange(min=0),
                  help="Checkpoint every N iterations [default: about every 5 minutes].")
    @click.option("--checkpoint-keep", default=3, show_default=True, type=click.IntRange(min=1),
                  help="Checkpoints kept (the latest ones).")
    @click.option("--name", help="Experiment name; the run directory is NAME_<timestamp>.")
    @click.option("--resume", type=click.Path(path_type=Path, file_okay=False), metavar="RUN_DIR",
                  help="Continue the run in RUN_DIR from its latest checkpoint.")
    @click.option("--dashboard", is_flag=True, help="Start Ray's dashboard on 127.0.0.1 (embedded cluster).")
    @click.option("--debug", is_flag=True, help="Show tracebacks and Ray's own logs.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress and no per-result lines; errors and summary only.")
    @click.option("--json", "json_summary", is_flag=True, help="End with a one-line JSON summary of the run.")
    @click.version_option(__version__, "--version", prog_name="pong-train")
    @click.pass_context
    def cli(ctx: click.Context, **params: Any) -> int | None:
        """Train an IMPALA agent on Atari Pong with Ray RLlib.

        With no subcommand, trains: on an embedded Ray cluster (default), an existing one
        (--ray-address), or wherever --backend sends the job.
        """
        progress.quiet = params["quiet"]
        if ctx.invoked_subcommand is not None:
            return None
        owners = {p.name: p.pong_train_plugin for p in ctx.command.params if getattr(p, "pong_train_plugin", None)}
        core = {k: v for k, v in params.items() if k not in owners}
        options = {k: v for k, v in params.items() if k in owners}
        backend_plugin = known[core["backend"]][1]
        backend_plugins = {plugin for _, plugin in known.values()}
        for name, plugin_name in owners.items():
            # Options of another backend make no sense here; observers' options go with any backend.
            if plugin_name in backend_plugins - {backend_plugin} and \
                    ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                flag = next(p.opts[0] for p in ctx.command.params if p.name == name)
                raise UsageError(f"{flag} belongs to plugin {plugin_name}, not to backend '{core['backend']}'")
        job = resume_job(ctx, pm, core) if core["resume"] else build_job(ctx, pm, core, options)
        status = pm.hook.pong_train_launch(job=job)
        if status is None:
            raise UsageError(f"no installed plugin launches backend '{job.backend}'")
        return status

    core_names = {opt for p in cli.params for opt in p.opts}
    for plugin_name, options in results_by_plugin(pm, "pong_train_cli_options"):
        for option in options:
            clash = core_names.intersection(option.opts)
            if clash:
                raise UsageError(f"plugin {plugin_name} adds option {sorted(clash)[0]}, which pong-train already has")
            option.pong_train_plugin = plugin_name
            option.help = f"[{plugin_name}] {option.help or ''}".strip()
            cli.params.append(option)
            core_names.update(option.opts)

    for plugin_name, commands in results_by_plugin(pm, "pong_train_cli_commands"):
        for command in commands:
            if command.name in cli.commands or command.name == "backends":
                raise UsageError(f"plugin {plugin_name} adds subcommand {command.name}, which already exists")
            cli.add_command(command)

    @cli.command("backends")
    def list_backends() -> None:
        """List the installed backends: name, version and source distribution."""
        rows = [("NAME", "VERSION", "DISTRIBUTION", "DESCRIPTION")]
        for name, (backend, plugin_name) in sorted(known.items()):
            dist, version = distribution_of(pm, plugin_name)
            rows.append((name, version, dist, backend.description))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])

    @cli.command("plot")
    @click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False))
    @click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
                  help="PNG file [default: curve.png in the only RUN_DIR, or curves.png here].")
    def plot(run_dirs: tuple[Path, ...], output: Path | None) -> None:
        """Plot episode_reward_mean against env steps and wall time for one or more runs."""
        from pong_train.plotting import plot_runs

        default = run_dirs[0] / "curve.png" if len(run_dirs) == 1 else Path("curves.png")
        click.echo(f"wrote {plot_runs(list(run_dirs), output or default)}")

    @cli.command("bench")
    @click.option("--seconds", default=30.0, show_default=True, type=click.FloatRange(min=1),
                  help="Measured time of each end-to-end measurement.")
    @click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
                  help="Repeats of each measurement (medians are reported).")
    @click.option("--tiny", is_flag=True, help="A few seconds, once: proves the bench works, measures nothing.")
    @click.option("--storage-path", default=Path("runs"), show_default=True, type=click.Path(path_type=Path))
    @click.option("--json", "as_json", is_flag=True, help="End with one JSON object on stdout.")
    @click.option("--learning", is_flag=True,
                  help="Learning instead of speed: train each --setting for --steps agent steps, one at a time.")
    @click.option("--setting", "setting_texts", multiple=True, metavar="NAME[=JSON]",
                  help="With --learning: a named setting (default, python-wrappers, rllib-loss) or NAME=JSON "
                       "with config keys; repeatable [default: default and python-wrappers, the parity test].")
    @click.option("--steps", default=2_000_000, show_default=True, type=click.IntRange(min=1),
                  help="With --learning: agent steps each run trains.")
    @click.option("--minutes", type=click.FloatRange(min=0, min_open=True),
                  help="With --learning: also stop each run after this many minutes.")
    @click.option("--seeds", default=2, show_default=True, type=click.IntRange(min=1),
                  help="With --learning: runs of each setting, seeded 1..N.")
    def bench(seconds: float, repeats: int, tiny: bool, storage_path: Path, as_json: bool, learning: bool,
              setting_texts: tuple[str, ...], steps: int, minutes: float | None, seeds: int) -> None:
        """Measure speed (the emulator limit, the sampling path, stock RLlib IMPALA and the default
        pipeline) or, with --learning, how fast settings learn per agent step and per minute."""
        from pong_train.bench import BenchSettings, run_bench, table
        from pong_train.training import check_storage

        check_storage(storage_path)
        if learning:
            from pong_train import learning as learning_bench

            texts = setting_texts or learning_bench.DEFAULT_SETTINGS
            chosen = [learning_bench.parse_setting(text) for text in texts]
            out_dir = storage_path / time.strftime("learning_%Y%m%d-%H%M%S")
            report = learning_bench.run_learning_bench(chosen, seeds, steps, minutes, out_dir,
                                                       say=lambda line: click.echo(line, err=True))
            click.echo(learning_bench.table(report))
            click.echo(f"written: {out_dir / 'learning.json'}, {out_dir / 'learning.png'}")
            if as_json:
                click.echo(json.dumps({"out_dir": str(out_dir), "runs": [
                    {k: run[k] for k in ("setting", "seed", "steps", "time_s", "final_reward", "milestones")}
                    for run in report["runs"]]}))
            return
        settings = BenchSettings(seconds=3 if tiny else seconds, repeats=1 if tiny else repeats)
        if tiny:
            settings.envs_per_runner = 4
        out_dir = storage_path / time.strftime("bench_%Y%m%d-%H%M%S")
        report = run_bench(settings, out_dir, say=lambda line: click.echo(line, err=True))
        click.echo(table(report))
        click.echo(f"written: {out_dir / 'bench.json'}, {out_dir / 'bench.png'}")
        if as_json:
            keys = ("ratio_vs_stock", "sampling_fraction_of_limit", "end_to_end_fraction_of_limit",
                    "end_to_end_steps_per_s", "stock_steps_per_s", "sampling_steps_per_s", "limit_frames_per_s",
                    "peak_rss_mb")
            click.echo(json.dumps({k: report[k] for k in keys} | {"out_dir": str(out_dir)}))

    @cli.command("evaluate")
    @click.argument("checkpoint", type=click.Path(path_type=Path, file_okay=False))
    @click.option("--episodes", default=1, show_default=True, type=click.IntRange(min=1), help="Episodes to play.")
    @click.option("--video", type=click.Path(path_type=Path, dir_okay=False), help="Record to FILE.mp4 or FILE.gif.")
    @click.option("--explore", is_flag=True, help="Sample actions instead of taking the most likely one.")
    @click.option("--seed", type=int, help="Seed the environment for a repeatable evaluation.")
    def evaluate(checkpoint: Path, episodes: int, video: Path | None, explore: bool, seed: int | None) -> None:
        """Play episodes with a trained policy (a checkpoint, or a run directory's latest one)."""
        from pong_train.evaluate import play, summary

        with progress.step(f"playing {episodes} episode(s)"):
            returns = play(checkpoint, episodes, video, explore, seed)
        click.echo(summary(returns))
        if video:
            click.echo(f"video: {video}")

    return cli


def one_line(message: str) -> str:
    """User input echoed in an error must not break it over lines: control characters are escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in message)


def main(argv: list[str] | None = None, plugin_manager: Any = None) -> int:
    """Entry point of `pong-train` and `python -m pong_train`: bad input exits 2 with one line."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        cli = build_cli(plugin_manager or get_plugin_manager())
        status = cli.main(args=argv, prog_name="pong-train", standalone_mode=False)
        return status if isinstance(status, int) else 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as err:
        click.echo(one_line(f"pong-train: error: {err.format_message()} (see pong-train --help)"), err=True)
        return 2
    except UsageError as err:
        if debug:
            traceback.print_exc()
        click.echo(one_line(f"pong-train: error: {err}"), err=True)
        return err.exit_code
    except (KeyboardInterrupt, click.Abort):
        click.echo("pong-train: interrupted", err=True)
        return 130
    except Exception as err:  # the last line of defence: no traceback unless asked for
        if debug:
            raise
        click.echo(one_line(f"pong-train: internal error: {type(err).__name__}: {err} (rerun with --debug for details)"),
                   err=True)
        return 1
