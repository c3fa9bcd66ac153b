"""`pong-train plot`: learning curves of one or more runs."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="PNG file [default: curve.png in the only RUN_DIR, or curves.png here].")
def plot(run_dirs: tuple[Path, ...], output: Path | None) -> None:
    """Plot episode_reward_mean against env steps and wall time for one or more runs."""
    from pong_train.plotting import plot_runs
    from pong_train.rundir import CURVE_FILE

    default = run_dirs[0] / CURVE_FILE if len(run_dirs) == 1 else Path("curves.png")
    click.echo(f"wrote {plot_runs(list(run_dirs), output or default)}")
