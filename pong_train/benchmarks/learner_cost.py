"""`pong-train bench --learner`: where the learner's time goes, per agent step and pass, for IMPALA and APPO, with
RLlib's own learner of each beside pong-train's.

The learner trains, in this process on one torch thread as in a run, on real episodes sampled once by the
default env runner; each update is the run's own `Learner.update` call. Its phases are timed where RLlib
calls them: the learner connector (episodes to a train batch), the module's forward pass, the loss (with
APPO's target-network forward), the backward pass, gradient clipping, the optimizer step; what is
left of the update is RLlib's bookkeeping around them (minibatching, metrics, off-policyness).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Callable, Iterator

from pong_train.benchmarks.speed import BenchSettings, embedded_cluster, median_of
from pong_train.config import build_config
from pong_train.rllib_config import algorithm_config

LEARNERS: dict[str, tuple[str, dict[str, Any]]] = {
    "IMPALA": ("IMPALA", {}),
    "IMPALA, RLlib's learner": ("IMPALA", {"bootstrap_fragments": False}),
    "APPO": ("APPO", {}),
    "APPO, RLlib's learner": ("APPO", {"bootstrap_fragments": False}),
}
"""The learners measured, side by side: pong-train's and RLlib's own (its loss and its optimizer) for each
algorithm, on the same network, frames and update size."""

PHASES: dict[str, str] = {
    "connector": "_learner_connector",
    "forward": "forward_train",
    "loss": "compute_losses",
    "backward": "compute_gradients",
    "clip": "postprocess_gradients",
    "optimizer": "apply_gradients",
}
"""Each timed phase and the learner's (or its module's) callable RLlib calls for it."""


class PhaseClock:
    """Seconds spent in each phase, accumulated while `timing` wraps the learner's callables."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def timed(self, phase: str, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started

        return wrapper

    @contextlib.contextmanager
    def timing(self, learner: Any) -> Iterator[None]:
        """Times `learner`'s phases on this instance only (its class, and so every other learner, is untouched)."""
        owners = {phase: learner.module if phase == "forward" else learner for phase in PHASES}
        originals = {phase: owners[phase].__dict__.get(name) for phase, name in PHASES.items()}
        for phase, name in PHASES.items():
            setattr(owners[phase], name, self.timed(phase, getattr(owners[phase], name)))
        try:
            yield
        finally:
            for phase, name in PHASES.items():
                if originals[phase] is None:
                    delattr(owners[phase], name)
                else:
                    setattr(owners[phase], name, originals[phase])


def learner_cost(run: str, env: str, num_envs: int | None, seconds: float, overrides: dict[str, Any] | None = None
                 ) -> dict[str, float]:
    """Milliseconds per agent step and pass of each phase of `run`'s learner under today's defaults (changed
    by `overrides`), trained for about `seconds` on one sample of `num_envs` emulators' fragments (None: the
    algorithm's default sample)."""
    import torch
    from ray.rllib.core.learner.training_data import TrainingData
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    emulators = {} if num_envs is None else {"num_envs_per_env_runner": num_envs}
    config = build_config([{"num_env_runners": 0, **emulators, **(overrides or {})}], run)
    algo = algorithm_config(config, env, run).build_algo()
    try:
        torch.set_num_threads(1)  # as in a run (pong_train.callbacks)
        learner = algo.learner_group._learner
        episodes = algo.env_runner.sample(num_timesteps=config.num_envs_per_env_runner * config.rollout_fragment_length)
        steps = sum(len(episode) for episode in episodes)

        def update() -> None:
            learner.update(TrainingData(episodes=episodes), timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: steps},
                           num_epochs=1, minibatch_size=config.update_size())

        update()  # warm-up: the optimizer's state, torch's kernels
        clock = PhaseClock()
        updates, started = 0, time.perf_counter()
        with clock.timing(learner):
            while updates < 2 or time.perf_counter() - started < seconds:
                update()
                updates += 1
        total = time.perf_counter() - started
    finally:
        algo.stop()
    per_step = 1000 / (updates * steps)
    costs = {phase: spent * per_step for phase, spent in clock.seconds.items()}
    costs["bookkeeping"] = total * per_step - sum(costs.values())
    costs["total"] = total * per_step
    return costs


def measure(settings: BenchSettings, num_envs: int | None = None, say: Callable[[str], None] = print
            ) -> dict[str, dict[str, float]]:
    """Each of `LEARNERS`' `learner_cost` on samples of `num_envs` emulators (None: each algorithm's default),
    measured `settings.repeats` times interleaved; the medians."""
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in LEARNERS}
    with embedded_cluster(settings):
        for repeat in range(settings.repeats):
            say(f"repeat {repeat + 1}/{settings.repeats}")
            for name, (run, overrides) in LEARNERS.items():
                measured[name].append(learner_cost(run, settings.env, num_envs, settings.seconds, overrides))
                say(f"  {name:<26} {measured[name][-1]['total']:.3f} ms per agent step and pass")
    return {name: median_of(rows) for name, rows in measured.items()}


def table(costs: dict[str, dict[str, float]]) -> str:
    """One row per measured learner, one column per phase, in milliseconds per agent step and pass."""
    columns = [*PHASES, "bookkeeping", "total"]
    lines = [f"{'learner ms per agent step and pass':<36}" + "".join(f"{c:>13}" for c in columns)]
    for name, row in costs.items():
        lines.append(f"{name:<36}" + "".join(f"{row[c]:>13.3f}" for c in columns))
    lines.append("connector: episodes to a train batch; loss: with APPO's target-network forward; "
                 "bookkeeping: the rest of each Learner.update call")
    return "\n".join(lines)
