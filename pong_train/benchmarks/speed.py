"""`pong-train bench`: the emulator's limit, the sampling path, stock RLlib IMPALA and pong-train's IMPALA and
APPO, measured side by side on this machine, repeated, reported as medians and ratios, with how busy each side
(the learner's process, the env runners) kept its core."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from pong_train import atari
from pong_train.cluster import connect, emulator_threads
from pong_train.config import TrainConfig, build_config
from pong_train.callbacks import cpu_seconds
from pong_train.rllib_config import algorithm_config, register_envs

FRAMESKIP = 4


@dataclasses.dataclass
class BenchSettings:
    seconds: float = 30.0
    """Measured time of each end-to-end measurement (after a warm-up iteration)."""
    repeats: int = 3
    """Times each measurement is repeated; medians are reported."""
    cores: int = os.cpu_count() or 1
    env: str = "PongNoFrameskip-v4"
    envs_per_runner: int | None = None
    """Emulators per env runner; None: each algorithm's default."""


@contextlib.contextmanager
def embedded_cluster(settings: BenchSettings) -> Iterator[Any]:
    """The core's embedded Ray cluster with the bench's cores and pong-train's envs; shut down after."""
    import ray

    connect(None, num_cpus=settings.cores)
    try:
        register_envs()
        yield ray
    finally:
        ray.shutdown()


def spare_cores(settings: BenchSettings) -> int:
    """Env runners of an end-to-end run: one per core, but the learner's."""
    return max(1, settings.cores - 1)


def session_rss_mb() -> float:
    """Resident memory of this process and every Ray process of this session."""
    import psutil

    me = psutil.Process()
    processes = [me, *me.children(recursive=True)]
    total = 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def emulator_limit(settings: BenchSettings) -> dict[str, float]:
    """(a) ale-py's C++ vector env with its preprocessing, random actions, one thread per core."""
    from ale_py.vector_env import AtariVectorEnv

    atari._register_ale()
    import gymnasium as gym

    game = gym.spec(settings.env).kwargs["game"]
    env = AtariVectorEnv(game, settings.cores * 16, num_threads=settings.cores, img_height=42, img_width=42,
                         frameskip=FRAMESKIP, reward_clipping=False)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < max(2.0, settings.seconds / 3):
        env.step(rng.integers(0, env.single_action_space.n, env.num_envs))
        steps += env.num_envs
    elapsed = time.perf_counter() - started
    env.close()
    return {"steps_per_s": steps / elapsed, "frames_per_s": steps * FRAMESKIP / elapsed}


def default_config(settings: BenchSettings, num_env_runners: int, run: str = "IMPALA") -> Any:
    """(d) pong-train's default pipeline, (e) the same with --run APPO: the defaults, at the bench's size."""
    emulators = {} if settings.envs_per_runner is None else {"num_envs_per_env_runner": settings.envs_per_runner}
    config = build_config([{"num_env_runners": num_env_runners, **emulators,
                            "num_emulator_threads": emulator_threads(settings.cores, num_env_runners),
                            "min_time_s_per_iteration": 5}], run)
    return algorithm_config(config, settings.env, run)


def sampling_path(settings: BenchSettings) -> dict[str, float]:
    """(b) the default pipeline's env runners alone, one per core, sampling with the real policy."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    with embedded_cluster(settings) as ray:
        config = default_config(settings, settings.cores)
        runner_cls = ray.remote(num_cpus=1)(SingleAgentEnvRunner)
        runners = [runner_cls.remote(config=config, worker_index=i + 1) for i in range(settings.cores)]
        chunk = config.num_envs_per_env_runner * config.rollout_fragment_length
        ray.get([r.sample.remote(num_timesteps=chunk) for r in runners])  # warm-up
        steps, started = 0, time.perf_counter()
        while time.perf_counter() - started < max(2.0, settings.seconds / 3):
            episodes = ray.get([r.sample.remote(num_timesteps=chunk) for r in runners])
            steps += sum(len(e) for batch in episodes for e in batch)
        elapsed = time.perf_counter() - started
        return {"steps_per_s": steps / elapsed, "frames_per_s": steps * FRAMESKIP / elapsed,
                "peak_rss_mb": session_rss_mb()}


# Settings RLlib's IMPALA leaves at its defaults: read from RLlib, so the baseline follows RLlib, not pong-train.
RLLIB_DEFAULT_FIELDS = ("train_batch_size_per_learner", "num_epochs", "lr", "gamma", "entropy_coeff",
                        "vf_loss_coeff", "grad_clip", "num_gpus_per_learner",
                        "num_gpu_loader_threads", "num_cpus_per_env_runner", "restart_failed_env_runners", "seed")


def stock_train_config(settings: BenchSettings) -> TrainConfig:
    """(c) RLlib IMPALA as it comes: RLlib's Atari wrapper, loss and default network for 42-pixel frames, the
    article's settings (fragments of 50, one env runner per spare core) and RLlib's other defaults."""
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.models.utils import get_filter_config

    rllib = IMPALAConfig()
    return TrainConfig(
        **{name: getattr(rllib, name) for name in RLLIB_DEFAULT_FIELDS},
        num_env_runners=spare_cores(settings), num_envs_per_env_runner=16, rollout_fragment_length=50,
        num_learners=0, dim=42, framestack=4, frameskip=FRAMESKIP, clip_rewards=True,
        vector_env=False,  # RLlib's Python Atari wrappers
        bootstrap_fragments=False,  # RLlib's own V-trace loss
        # RLlib gives kernels as [k, k] and pads every layer 'same'.
        conv_filters=[(channels, kernel[0], stride) for channels, kernel, stride in get_filter_config((42, 42, 4))],
        head_fcnet_hiddens=DefaultModelConfig().head_fcnet_hiddens, vf_share_layers=True,
        min_time_s_per_iteration=5,
    )


def stock_config(settings: BenchSettings) -> Any:
    """The core's IMPALAConfig for `stock_train_config`, less what the core adds whatever the TrainConfig."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    return (
        algorithm_config(stock_train_config(settings), settings.env)
        # The core always samples on the driver while every env runner is being replaced; stock RLlib does not.
        .env_runners(create_env_on_local_worker=False)
        # The core's callbacks pin the learner's torch to one thread and collect memory; stock RLlib has none.
        .callbacks(callbacks_class=RLlibCallback)
    )


def env_runners_cpu_s(algo: Any) -> list[float]:
    """CPU seconds used so far by each remote env runner's process."""
    return algo.env_runner_group.foreach_env_runner(lambda _runner: cpu_seconds(), local_env_runner=False)


def end_to_end(settings: BenchSettings, make_config: Callable[[], Any]) -> dict[str, float]:
    """Build the algorithm, train for `settings.seconds` after a warm-up, count env steps and trained steps, and
    the CPU share of each side: the algorithm's process (where the learner trains) and the env runners'."""
    with embedded_cluster(settings):
        algo = make_config().build_algo()
        try:
            def sampled(result: dict) -> float:
                return float(result["env_runners"].get("num_env_steps_sampled_lifetime", 0))

            first = algo.train()
            learner_cpu, runners_cpu = cpu_seconds(), env_runners_cpu_s(algo)
            started, peak = time.perf_counter(), session_rss_mb()
            last, iterations = first, 0
            # At least the asked-for time and two iterations that sampled something (at most 20 iterations).
            while iterations < 20 and (time.perf_counter() - started < settings.seconds or iterations < 2
                                       or sampled(last) <= sampled(first)):
                last = algo.train()
                iterations += 1
                peak = max(peak, session_rss_mb())
            elapsed = time.perf_counter() - started
            learner_busy = (cpu_seconds() - learner_cpu) / elapsed
            runners_busy = [(now - before) / elapsed for now, before in zip(env_runners_cpu_s(algo), runners_cpu)]

            def trained(result: dict) -> float:
                return float(result.get("learners", {}).get("__all_modules__", {}).get(
                    "num_env_steps_trained_lifetime", 0))

            steps = sampled(last) - sampled(first)
            # The passes each sampled step is trained in, as configured; the algorithm's process also drives the
            # run, so this is an upper bound of the learner's own cost.
            passes = algo.config.num_epochs * getattr(algo.config, "circular_buffer_iterations_per_batch", 1)
            learner_ms = learner_busy * elapsed * 1000 / steps / passes if steps else float("nan")
            return {"steps_per_s": steps / elapsed, "frames_per_s": steps * FRAMESKIP / elapsed,
                    "trained_steps_per_s": (trained(last) - trained(first)) / elapsed, "peak_rss_mb": peak,
                    "learner_busy": learner_busy, "env_runners_busy": statistics.mean(runners_busy),
                    "learner_ms_per_step_pass": learner_ms}
        finally:
            algo.stop()


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def run_bench(settings: BenchSettings, out_dir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    measured: dict[str, list[dict[str, float]]] = {"limit": [], "sampling": [], "stock": [], "default": [], "appo": []}
    for repeat in range(settings.repeats):
        say(f"repeat {repeat + 1}/{settings.repeats}")
        # Interleaved, so that noise from the rest of the machine falls on every measurement alike.
        measured["limit"].append(emulator_limit(settings))
        measured["sampling"].append(sampling_path(settings))
        measured["stock"].append(end_to_end(settings, lambda: stock_config(settings)))
        measured["default"].append(end_to_end(
            settings, lambda: default_config(settings, spare_cores(settings))))
        measured["appo"].append(end_to_end(
            settings, lambda: default_config(settings, spare_cores(settings), "APPO")))
        for name, runs in measured.items():
            say(f"  {name:<9} {runs[-1]['steps_per_s']:>9,.0f} agent steps/s  {runs[-1]['frames_per_s']:>9,.0f} frames/s")
    medians = {name: median_of(runs) for name, runs in measured.items()}
    report = {
        "ratio_vs_stock": medians["default"]["steps_per_s"] / medians["stock"]["steps_per_s"],
        "sampling_fraction_of_limit": medians["sampling"]["frames_per_s"] / medians["limit"]["frames_per_s"],
        "end_to_end_fraction_of_limit": medians["default"]["frames_per_s"] / medians["limit"]["frames_per_s"],
        "end_to_end_steps_per_s": medians["default"]["steps_per_s"],
        "stock_steps_per_s": medians["stock"]["steps_per_s"],
        "sampling_steps_per_s": medians["sampling"]["steps_per_s"],
        "limit_frames_per_s": medians["limit"]["frames_per_s"],
        "appo_steps_per_s": medians["appo"]["steps_per_s"],
        "peak_rss_mb": {name: m.get("peak_rss_mb") for name, m in medians.items() if "peak_rss_mb" in m},
        "busy": {name: {"learner": m["learner_busy"], "env_runners": m["env_runners_busy"]}
                 for name, m in medians.items() if "learner_busy" in m},
        "learner_ms_per_step_pass": {name: m["learner_ms_per_step_pass"] for name, m in medians.items()
                                     if "learner_ms_per_step_pass" in m},
        "medians": medians,
        "runs": measured,
        "settings": dataclasses.asdict(settings),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    chart(medians, out_dir / "bench.png")
    return report


LABELS = {"limit": "(a) emulator limit", "sampling": "(b) sampling path", "stock": "(c) stock RLlib IMPALA",
          "default": "(d) pong-train IMPALA", "appo": "(e) pong-train APPO"}


def chart(medians: dict[str, dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(LABELS)
    fig, axes = plt.subplots(figsize=(8, 4))
    values = [medians[n]["frames_per_s"] for n in names]
    axes.barh([LABELS[n] for n in names], values, color=["grey", "tab:blue", "tab:red", "tab:green", "tab:olive"])
    for y, value in enumerate(values):
        axes.text(value, y, f" {value:,.0f}", va="center")
    axes.set_xlabel("emulator frames per second (agent steps x 4), median")
    axes.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def table(report: dict[str, Any]) -> str:
    m = report["medians"]
    lines = [f"{'':<28}{'agent steps/s':>15}{'frames/s':>12}{'peak RSS MB':>13}{'learner busy':>14}"
             f"{'env runner busy':>17}{'learner ms/step/pass':>22}"]
    for name, label in LABELS.items():
        rss, learner, runners, cost = (m[name].get(key) for key in (
            "peak_rss_mb", "learner_busy", "env_runners_busy", "learner_ms_per_step_pass"))
        lines.append(f"{label:<28}{m[name]['steps_per_s']:>15,.0f}{m[name]['frames_per_s']:>12,.0f}"
                     f"{'' if rss is None else f'{rss:,.0f}':>13}{'' if learner is None else f'{learner:.2f}':>14}"
                     f"{'' if runners is None else f'{runners:.2f}':>17}{'' if cost is None else f'{cost:.3f}':>22}")
    lines.append(f"(d)/(c) end to end vs stock:      {report['ratio_vs_stock']:.2f}x")
    lines.append(f"(b)/(a) sampling vs the limit:    {report['sampling_fraction_of_limit']:.2f}")
    lines.append(f"(d)/(a) end to end vs the limit:  {report['end_to_end_fraction_of_limit']:.2f}")
    lines.append("busy: CPU time per wall second of the learner's process and of each env runner (1.00 = one core)")
    lines.append("learner ms/step/pass: CPU milliseconds of the learner's process per agent step sampled, over the "
                 "passes each step is trained in")
    return "\n".join(lines)
