"""Learning curves: episode_reward_mean against agent steps and wall time (and the policy's entropy where known),
several runs overlaid; `pong-train plot`, each run's curve.png and `bench --learning` all draw with `draw`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from pong_train.errors import UsageError
from pong_train.loggers import METRICS_FILE, read_metrics
from pong_train.trials import trial_folders

ENTROPY = "learners/default_policy/entropy"


@dataclasses.dataclass
class Curve:
    """One run's points, in the order they were reported."""

    label: str
    steps: list[float]
    minutes: list[float]
    reward: list[Optional[float]]
    """episode_reward_mean; None before the first episode ends."""
    entropy: list[Optional[float]] = dataclasses.field(default_factory=list)
    colour: Optional[str] = None
    dashed: bool = False


def run_curve(run_dir: Path) -> Curve:
    """The curve in a run directory's metrics.jsonl."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        raise UsageError(f"{run_dir}: no {METRICS_FILE} here; give a run directory made by pong-train")
    rows = list(read_metrics(path))
    return Curve(run_dir.name, [r.get("timesteps_total") or 0 for r in rows], [r.get("time_total_s", 0) / 60 for r in rows],
                 [r.get("episode_reward_mean") for r in rows],
                 [r.get(ENTROPY) for r in rows])


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Write a PNG like the article's RunDetails chart of the runs in `run_dirs` (every trial of an experiment of
    several); returns its path."""
    return draw([curve for run_dir in run_dirs for curve in run_curves(run_dir)], out)


def run_curves(run_dir: Path) -> list[Curve]:
    """The run's curve, or each trial's (labelled RUN/trial_<index>) in an experiment of several trials."""
    trials = [folder for folder in trial_folders(run_dir) if (folder / METRICS_FILE).exists()]
    if (run_dir / METRICS_FILE).exists() or not trials:
        return [run_curve(run_dir)]
    curves = [run_curve(folder) for folder in trials]
    for curve in curves:
        curve.label = f"{run_dir.name}/{curve.label}"
    return curves


def draw(curves: list[Curve], out: Path) -> Path:
    """Return against agent steps and wall time, and entropy against agent steps when any curve has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_entropy = any(e is not None for curve in curves for e in curve.entropy)
    fig, panels = plt.subplots(1, 3 if with_entropy else 2, figsize=(16 if with_entropy else 12, 4.5))
    by_steps, by_time = panels[0], panels[1]
    for curve in curves:
        style = dict(color=curve.colour, alpha=0.85, linestyle="--" if curve.dashed else "-")
        scored = [i for i, reward in enumerate(curve.reward) if reward is not None]
        rewards = [curve.reward[i] for i in scored]
        by_steps.plot([curve.steps[i] / 1e6 for i in scored], rewards, label=curve.label, **style)
        by_time.plot([curve.minutes[i] for i in scored], rewards, **style)
        if with_entropy:
            known = [i for i, e in enumerate(curve.entropy) if e is not None]
            panels[2].plot([curve.steps[i] / 1e6 for i in known], [curve.entropy[i] for i in known], **style)
    rewards = [r for curve in curves for r in curve.reward if r is not None]
    # Zoomed in while nothing has learned yet, so early differences show; the whole range once one has.
    top = 21.5 if not rewards or max(rewards) > 0 else max(rewards) + 2
    by_steps.set(xlabel="agent steps (millions)", ylabel="episode_reward_mean (last 100 episodes)", ylim=(-21.5, top))
    by_time.set(xlabel="wall time (minutes)", ylim=(-21.5, top))
    if with_entropy:
        panels[2].set(xlabel="agent steps (millions)", ylabel="policy entropy (nats)")
    for axes in panels:
        axes.grid(alpha=0.3)
    if top > 18:
        for axes in (by_steps, by_time):
            axes.axhline(18, color="grey", linestyle=":", linewidth=1)
    by_steps.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
