"""`pong-train bench --learning`: named settings trained one after another for the same budget of agent
steps, each as the `pong-train` command would run it; curves, milestones and memory compared."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pong_train.errors import UsageError
from pong_train.loggers import METRICS_FILE, read_metrics
from pong_train.plotting import ENTROPY, Curve, draw

SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "python-wrappers": {"vector_env": False},
    "rllib-loss": {"bootstrap_fragments": False},
    "appo": {"run": "APPO"},
}
"""Settings known by name; anything else is given as NAME=JSON (config keys, as for --config, and "run":
"APPO" to train APPO instead of IMPALA)."""

DEFAULT_SETTINGS = ("default", "python-wrappers")
"""Learning parity: the C++ vector env against RLlib's Python Atari wrappers, same network and settings."""

MILESTONES = (-15.0, 0.0, 10.0, 18.0)
"""Levels of episode_reward_mean whose first crossing is reported."""

MEMORY_SETTLED_S = 600
"""Memory growth is measured from the first result after this many seconds of training."""


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """`NAME` of a known setting, or `NAME=JSON` with config keys."""
    name, sep, raw = text.partition("=")
    if not sep:
        if name not in SETTINGS:
            raise UsageError(f"--setting '{name}' is not a known setting ({', '.join(SETTINGS)}); "
                             "give NAME=JSON for your own")
        return name, SETTINGS[name]
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UsageError(f"--setting {name}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(config, dict) or not name:
        raise UsageError(f"--setting must be NAME or NAME=JSON-object, got '{text}'")
    return name, config


def train_once(name: str, config: dict[str, Any], seed: int, steps: int, minutes: float | None, out_dir: Path,
               env: str) -> Path:
    """One training run through the `pong-train` command itself; returns its run directory."""
    stop: dict[str, float] = {"timesteps_total": steps}
    if minutes:
        stop["time_total_s"] = minutes * 60
    run_name = f"{name}_seed{seed}"
    config = dict(config)
    algorithm = config.pop("run", "IMPALA")
    argv = [sys.executable, "-m", "pong_train", "--run", algorithm, "--env", env,
            "--config", json.dumps({"num_gpus": 0, **config, "seed": seed}), "--stop", json.dumps(stop),
            "--name", run_name, "--storage-path", str(out_dir), "--checkpoint-freq", "0", "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"setting {name} (seed {seed}) failed with exit {done.returncode}: {last}")
    return max(out_dir.glob(f"{run_name}_*"), key=os.path.getmtime)


def first_crossing(rows: list[dict[str, Any]], level: float) -> dict[str, float] | None:
    for row in rows:
        if row.get("episode_reward_mean") is not None and row["episode_reward_mean"] >= level:
            return {"steps": row["timesteps_total"], "time_s": row["time_total_s"]}
    return None


def memory(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Peak and final RSS of each process, and its growth after the first `MEMORY_SETTLED_S` seconds."""
    processes = sorted({k.split("/", 1)[1] for row in rows for k in row if k.startswith("rss_mb/")})
    settled = next((r for r in rows if r["time_total_s"] >= MEMORY_SETTLED_S), None)
    report = {}
    for proc in processes:
        key = f"rss_mb/{proc}"
        values = [r[key] for r in rows if r.get(key) is not None]
        if not values:
            continue
        entry = {"peak": max(values), "final": values[-1]}
        if settled is not None and settled.get(key):
            entry["growth_after_settled"] = values[-1] / settled[key] - 1
        report[proc] = entry
    return report


def cpu_share(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Median CPU share (CPU time per wall second) of each process over the run's results."""
    processes = sorted({k.split("/", 1)[1] for row in rows for k in row if k.startswith("cpu_share/")})
    shares = {proc: [r[f"cpu_share/{proc}"] for r in rows if r.get(f"cpu_share/{proc}") is not None]
              for proc in processes}
    return {proc: statistics.median(values) for proc, values in shares.items() if values}


def summarize(name: str, config: dict[str, Any], seed: int, run_dir: Path) -> dict[str, Any]:
    rows = read_metrics(run_dir / METRICS_FILE)
    if not rows:
        raise UsageError(f"setting {name} (seed {seed}): {run_dir} has no results")
    return {
        "setting": name, "config": config, "seed": seed, "run_dir": str(run_dir),
        "steps": rows[-1]["timesteps_total"], "time_s": rows[-1]["time_total_s"],
        "final_reward": rows[-1].get("episode_reward_mean"),
        "milestones": {str(level): first_crossing(rows, level) for level in MILESTONES},
        "memory_mb": memory(rows),
        "cpu_share": cpu_share(rows),
        "curve": [{"steps": r["timesteps_total"], "time_s": r["time_total_s"],
                   "reward": r.get("episode_reward_mean"),
                   "iteration_reward": r.get("env_runners/episode_return_mean"),
                   "entropy": r.get(ENTROPY)} for r in rows],
    }


def run_learning_bench(settings: list[tuple[str, dict[str, Any]]], seeds: int, steps: int, minutes: float | None,
                       out_dir: Path, env: str = "PongNoFrameskip-v4",
                       say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every setting with seeds 1..`seeds`, one run at a time; write learning.json and learning.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in range(1, seeds + 1):
        for name, config in settings:
            say(f"training {name}, seed {seed}: {steps:,} agent steps" + (f" or {minutes:g} min" if minutes else ""))
            started = time.monotonic()
            run_dir = train_once(name, config, seed, steps, minutes, out_dir, env)
            runs.append(summarize(name, config, seed, run_dir))
            say(f"  done in {time.monotonic() - started:,.0f} s: episode_reward_mean {runs[-1]['final_reward']} "
                f"at {runs[-1]['steps']:,.0f} steps")
    report = {"env": env, "steps": steps, "minutes": minutes, "seeds": seeds, "runs": runs}
    (out_dir / "learning.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(report, out_dir / "learning.png")
    return report


def chart(report: dict[str, Any], out: Path) -> Path:
    """Return against agent steps and wall time, and policy entropy; one colour per setting, even seeds dashed."""
    colours = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(run["setting"] for run in report["runs"]))}
    return draw([Curve(f"{run['setting']} (seed {run['seed']})" if run["seed"] else run["setting"],
                       [p["steps"] for p in run["curve"]], [p["time_s"] / 60 for p in run["curve"]],
                       [p["reward"] for p in run["curve"]], [p["entropy"] for p in run["curve"]],
                       colours[run["setting"]], dashed=bool(run["seed"]) and run["seed"] % 2 == 0)
                 for run in report["runs"]], out)


def table(report: dict[str, Any]) -> str:
    head = f"{'setting':<24}{'seed':>5}{'steps':>11}{'minutes':>9}{'final':>8}" + "".join(
        f"{'>= ' + format(level, 'g'):>14}" for level in MILESTONES)
    head += f"{'busy L/E':>11}"
    lines = [head + "   (first crossing: M steps / minutes; busy: learner / env runners' CPU share)"]
    for run in report["runs"]:
        cells = []
        for level in MILESTONES:
            hit = run["milestones"][str(level)]
            cells.append(f"{hit['steps'] / 1e6:.2f}M/{hit['time_s'] / 60:.0f}m" if hit else "-")
        final = run["final_reward"]
        share = run.get("cpu_share", {})
        runners = [v for k, v in share.items() if k.startswith("env_runner")]
        busy = f"{share['learner']:.2f}/{statistics.mean(runners):.2f}" if "learner" in share and runners else "-"
        lines.append(f"{run['setting']:<24}{run['seed']:>5}{run['steps']:>11,.0f}{run['time_s'] / 60:>9.1f}"
                     f"{'-' if final is None else format(final, '.1f'):>8}" + "".join(f"{c:>14}" for c in cells)
                     + f"{busy:>11}")
    return "\n".join(lines)
