"""Learning curves: episode_reward_mean against env steps and against wall time, several runs overlaid."""

from __future__ import annotations

from pathlib import Path

from pong_train.errors import UsageError
from pong_train.loggers import METRICS_FILE, read_metrics


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Write a PNG like the article's RunDetails chart; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for run_dir in run_dirs:
        path = run_dir / METRICS_FILE
        if not path.exists():
            raise UsageError(f"{run_dir}: no {METRICS_FILE} here; give a run directory made by pong-train")
        rows = [r for r in read_metrics(path) if r.get("episode_reward_mean") is not None]
        curves.append((run_dir.name, rows))
    fig, (by_steps, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for name, rows in curves:
        rewards = [r["episode_reward_mean"] for r in rows]
        by_steps.plot([r["timesteps_total"] for r in rows], rewards, label=name)
        by_time.plot([r["time_total_s"] / 60 for r in rows], rewards, label=name)
    by_steps.set(xlabel="env steps (timesteps_total)", ylabel="episode_reward_mean", ylim=(-21.5, 21.5))
    by_time.set(xlabel="wall time (minutes)")
    for axes in (by_steps, by_time):
        axes.grid(alpha=0.3)
        axes.axhline(18, color="grey", linestyle=":", linewidth=1)
    by_steps.legend(loc="lower right", fontsize="small")
    fig.suptitle("episode_reward_mean")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
