"""`pong-train evaluate`: play episodes with a trained policy."""

from __future__ import annotations

from pathlib import Path

import click

from pong_train import progress


@click.command("evaluate")
@click.argument("target", required=False, type=click.Path(path_type=Path))
@click.option("--checkpoint", "choice", metavar="best|latest|PATH",
              help="Which checkpoint of the run: its best (by episode_reward_mean, the default where one is kept), "
                   "its latest, or a checkpoint folder or exported policy file (as given, or under the run).")
@click.option("--episodes", default=1, show_default=True, type=click.IntRange(min=1), help="Episodes to play.")
@click.option("--video", type=click.Path(path_type=Path, dir_okay=False), help="Record to FILE.mp4 or FILE.gif.")
@click.option("--explore", is_flag=True, help="Sample actions instead of taking the most likely one.")
@click.option("--seed", type=int, help="Seed the environment for a repeatable evaluation.")
@click.pass_context
def evaluate(ctx: click.Context, target: Path | None, choice: str | None, episodes: int, video: Path | None,
             explore: bool, seed: int | None) -> None:
    """Play episodes with a trained policy: a run directory's best checkpoint (or latest, where none is kept),
    a checkpoint folder, or a policy file written by `pong-train export`."""
    from pong_train.evaluate import choose, load_policy, play, summary
    from pong_train.export import load_exported

    path = choose(target, choice)
    policy = load_exported(path) if path.is_file() else load_policy(path)
    click.echo(f"policy: {policy.source}")
    with progress.step(f"playing {episodes} episode(s)", quiet=ctx.find_root().params.get("quiet", False)):
        returns = play(policy, episodes, video, explore, seed)
    click.echo(summary(returns))
    if video:
        click.echo(f"video: {video}")
