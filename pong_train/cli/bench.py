"""`pong-train bench`: speed side by side with stock RLlib, or learning per agent step (--learning)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.command("bench")
@click.option("--seconds", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="Measured time of each end-to-end measurement.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Repeats of each measurement (medians are reported).")
@click.option("--tiny", is_flag=True, help="A few seconds, once: proves the bench works, measures nothing.")
@click.option("--storage-path", default=Path("runs"), show_default=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object on stdout.")
@click.option("--learning", is_flag=True,
              help="Learning instead of speed: train each --setting for --steps agent steps, one at a time.")
@click.option("--learner", is_flag=True,
              help="The learner's cost instead: each phase of an update, in ms per agent step and pass, for IMPALA and "
                   "APPO and RLlib's own learner of each, trained for --seconds each on real samples.")
@click.option("--setting", "setting_texts", multiple=True, metavar="NAME[=JSON]",
              help="With --learning: a named setting (default, python-wrappers, rllib-loss, appo) or NAME=JSON "
                   "with config keys; repeatable [default: default and python-wrappers, the parity test].")
@click.option("--steps", default=2_000_000, show_default=True, type=click.IntRange(min=1),
              help="With --learning: agent steps each run trains.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True),
              help="With --learning: also stop each run after this many minutes.")
@click.option("--seeds", default=2, show_default=True, type=click.IntRange(min=1),
              help="With --learning: runs of each setting, seeded 1..N.")
def bench(seconds: float, repeats: int, tiny: bool, storage_path: Path, as_json: bool, learning: bool,
          learner: bool, setting_texts: tuple[str, ...], steps: int, minutes: float | None, seeds: int) -> None:
    """Measure speed (the emulator limit, the sampling path, stock RLlib IMPALA, pong-train's IMPALA
    and APPO, and how busy each keeps the learner's and the env runners' cores) or, with --learning, how
    fast settings learn per agent step and per minute."""
    from pong_train.benchmarks.speed import BenchSettings, run_bench, table
    from pong_train.rundir import check_storage

    check_storage(storage_path)
    if learner:
        from pong_train.benchmarks import learner_cost

        settings = BenchSettings(seconds=3 if tiny else seconds, repeats=1 if tiny else repeats)
        costs = learner_cost.measure(settings, num_envs=4 if tiny else None,
                                     say=lambda line: click.echo(line, err=True))
        click.echo(learner_cost.table(costs))
        if as_json:
            click.echo(json.dumps({"learner_ms_per_step_pass": costs}))
        return
    if learning:
        from pong_train.benchmarks import learning as learning_bench

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
                "end_to_end_steps_per_s", "stock_steps_per_s", "appo_steps_per_s", "sampling_steps_per_s",
                "limit_frames_per_s", "peak_rss_mb", "busy", "learner_ms_per_step_pass")
        click.echo(json.dumps({k: report[k] for k in keys} | {"out_dir": str(out_dir)}))
