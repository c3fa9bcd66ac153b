"""`pong-train evaluate`: play episodes with a trained policy."""

from __future__ import annotations

from pathlib import Path

import click

from pong_train import progress


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path, file_okay=False))
@click.option("--episodes", default=1, show_default=True, type=click.IntRange(min=1), help="Episodes to play.")
@click.option("--video", type=click.Path(path_type=Path, dir_okay=False), help="Record to FILE.mp4 or FILE.gif.")
@click.option("--explore", is_flag=True, help="Sample actions instead of taking the most likely one.")
@click.option("--seed", type=int, help="Seed the environment for a repeatable evaluation.")
@click.pass_context
def evaluate(ctx: click.Context, checkpoint: Path, episodes: int, video: Path | None, explore: bool,
             seed: int | None) -> None:
    """Play episodes with a trained policy (a checkpoint, or a run directory's latest one)."""
    from pong_train.evaluate import play, summary

    with progress.step(f"playing {episodes} episode(s)", quiet=ctx.find_root().params.get("quiet", False)):
        returns = play(checkpoint, episodes, video, explore, seed)
    click.echo(summary(returns))
    if video:
        click.echo(f"video: {video}")
