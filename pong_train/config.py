"""Training settings: one typed config, each algorithm's defaults and the presets (the article's keys are
translated in `user_config`)."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, ValidationError, field_validator,
                      model_validator)

from pong_train.errors import UsageError, validation_line
from pong_train.trials import Sweep, resolve


class TrainConfig(BaseModel):
    """Everything that shapes training. Keys use RLlib 2.60's names; the article's old names are translated."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    num_env_runners: Optional[int] = Field(default=None, ge=0)
    """Env runner actors sampling in parallel (the article's `num_workers`). None: one per CPU of the
    Ray cluster, minus one for the learner."""
    num_envs_per_env_runner: int = Field(default=64, ge=1)
    """Pong emulators each env runner steps as one batch (under `--run APPO`: 32 unless given, `APPO_SAMPLES`)."""
    vector_env: bool = True
    """Step each env runner's emulators in ale-py's C++ vector env, preprocessing in C++ and uint8 frames
    scaled inside the network; False uses RLlib's Python Atari wrappers, one gymnasium env each."""
    num_emulator_threads: Optional[int] = Field(default=None, ge=1)
    """Threads each env runner steps its emulators in (the C++ vector env only); above 1 they also use what
    the learner leaves of its core. None: the Ray cluster's CPUs per env runner, at most 2 (2 on a 2-core
    machine, 1 where every core has an env runner)."""
    num_cpus_per_env_runner: float = Field(default=1, gt=0)
    """CPUs Ray reserves for each env runner."""
    rollout_fragment_length: int = Field(default=50, ge=1)
    """Agent steps each env sends per sample (the article's `sample_batch_size`); V-trace's traces end there (under
    `--run APPO`: 100 unless given, `APPO_SAMPLES`)."""
    train_batch_size_per_learner: int = Field(default=100, ge=1)
    """Agent steps per gradient update on each learner (the article's `train_batch_size`). What an env
    runner returns at once (its emulators x `rollout_fragment_length` steps) is trained in consecutive
    slices of this size, rounded down to whole fragments. Smaller than the article's 500: more, smaller
    updates learn more per sample on 2 cores (the figures: docs/learning.md, sections 6, 7 and 9)."""
    minibatch_size: Optional[int] = Field(default=None, ge=1)
    """Agent steps per gradient update when it should differ from `train_batch_size_per_learner`: a
    multiple of `rollout_fragment_length`, at most `train_batch_size_per_learner`."""
    num_epochs: int = Field(default=1, ge=1)
    """Passes over each train batch (the article's `num_sgd_iter`)."""
    num_learners: int = Field(default=0, ge=0)
    """Remote learner actors; 0 trains in the algorithm's own process."""
    num_gpus_per_learner: float = Field(default=0, ge=0)
    """GPUs per learner (the article's `num_gpus`); above 0 the learner trains on a GPU."""
    num_gpu_loader_threads: int = Field(default=8, ge=1)
    """Threads moving batches onto each learner's GPU (the article's `num_data_loader_buffers`)."""
    lr: Union[PositiveFloat, list[tuple[NonNegativeInt, PositiveFloat]]] = 0.001
    """Learning rate (Adam's step size), or a schedule as RLlib takes it: `[[agent steps, lr], ...]`, from 0 steps
    on, steps increasing, linear between the points and the last lr after them. Twice RLlib's 0.0005 by default,
    which reached 18 sooner on 2 cores (the figures: docs/learning.md, section 10)."""
    gamma: float = Field(default=0.99, gt=0, le=1)
    """Discount factor."""
    entropy_coeff: float = Field(default=0.01, ge=0)
    """Weight of the entropy bonus."""
    vf_loss_coeff: float = Field(default=0.5, ge=0)
    """Weight of the value-function loss."""
    normalize_advantages: bool = False
    """Scale each update's V-trace advantages to mean 0 and standard deviation 1, as PPO does, so the
    entropy bonus weighs the same against the policy gradient whatever the rewards' size (with
    `bootstrap_fragments` only; off: no faster on Pong, docs/learning.md)."""
    vtrace_lambda: float = Field(default=1.0, gt=0, le=1)
    """V-trace's lambda (the IMPALA paper's): each step's trace is cut by this factor on top of the importance
    weight, so targets and advantages weigh near rewards over far ones as GAE(lambda) does; 1 is RLlib's V-trace
    (with `bootstrap_fragments` only)."""
    bootstrap_fragments: bool = True
    """V-trace bootstraps from the value at the end of each rollout fragment (pong_train.learner);
    False keeps RLlib 2.60's loss, which cuts every value target off at the fragment's end."""
    grad_clip: float = Field(default=40.0, gt=0)
    """Global-norm gradient clipping."""
    dim: int = Field(default=42, ge=10)
    """Side of the square grayscale frame the network sees (the article's `model.dim`)."""
    framestack: int = Field(default=4, ge=1)
    """Frames stacked into one observation."""
    frameskip: int = Field(default=4, ge=1)
    """Emulator frames per agent step, max-pooled over the last two."""
    conv_filters: Optional[list[Union[tuple[int, int, int], tuple[int, int, int, Literal["same", "valid"]]]]] = None
    """CNN layers as [channels, kernel, stride] or [channels, kernel, stride, padding]; None picks the
    classic Atari network for `dim` (42 or 84), whose last layer covers the whole frame."""
    head_fcnet_hiddens: list[int] = Field(default_factory=list)
    """Hidden layers of the policy and value heads."""
    vf_share_layers: bool = True
    """Policy and value function share the CNN."""
    clip_rewards: bool = True
    """Clip rewards to [-1, 1] for learning (reported returns stay unclipped)."""
    min_time_s_per_iteration: float = Field(default=10, ge=0)
    """Shortest training iteration in seconds; each iteration reports one result."""
    restart_failed_env_runners: bool = True
    """Replace an env runner that dies instead of failing the run."""
    seed: Optional[int] = None
    """Seed for the env runners and learners; None leaves runs random."""

    # APPO's own settings (`--run APPO`); None under IMPALA, and under APPO None means APPO_DEFAULTS'.
    clip_param: Optional[float] = Field(default=None, gt=0)
    """APPO: how far one update may move the probability ratio of an action from 1 (PPO's clip)."""
    use_kl_loss: Optional[bool] = None
    """APPO: add a KL term between the target network's policy and the trained one to the loss."""
    kl_coeff: Optional[float] = Field(default=None, ge=0)
    """APPO: initial weight of the KL term, adapted towards `kl_target` (with `use_kl_loss`)."""
    kl_target: Optional[float] = Field(default=None, gt=0)
    """APPO: the KL per update the KL term's weight is adapted to reach (with `use_kl_loss`)."""
    circular_buffer_num_batches: Optional[int] = Field(default=None, ge=1)
    """APPO: sampled batches the learner's circular buffer holds; the oldest is dropped for a new one."""
    circular_buffer_iterations_per_batch: Optional[int] = Field(default=None, ge=1)
    """APPO: passes the learner makes over each sampled batch at most (each pass made of updates of
    `train_batch_size_per_learner` steps, and `num_epochs` times over)."""
    target_network_update_freq: Optional[float] = Field(default=None, gt=0)
    """APPO: the target policy (the clip's and V-trace's reference) is refreshed every this many times
    `circular_buffer_num_batches` x `circular_buffer_iterations_per_batch` x `train_batch_size_per_learner`
    trained steps."""

    @field_validator("lr", mode="before")
    @classmethod
    def _schedule_from_zero(cls, lr: Any) -> Any:
        if not isinstance(lr, list):
            return lr
        pairs = all(isinstance(p, (list, tuple)) and len(p) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in p) for p in lr)
        steps = [p[0] for p in lr] if pairs else []
        if not lr or not pairs or steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])) or any(
                not float(step).is_integer() or value <= 0 for step, value in lr):
            raise ValueError(f"a schedule is [[0, lr], [agent steps, lr], ...], steps increasing, every lr above 0; "
                             f"got {lr!r}")
        return [(int(step), float(value)) for step, value in lr]

    @model_validator(mode="after")
    def _lambda_needs_our_loss(self) -> "TrainConfig":
        if self.vtrace_lambda != 1 and not self.bootstrap_fragments:
            raise ValueError(f"vtrace_lambda={self.vtrace_lambda:g} needs pong-train's V-trace "
                             f"(bootstrap_fragments true); RLlib's own loss has no lambda")
        return self

    @model_validator(mode="after")
    def _minibatch_fits(self) -> "TrainConfig":
        if self.minibatch_size is not None and (
            self.minibatch_size % self.rollout_fragment_length or self.minibatch_size > self.train_batch_size_per_learner
        ):
            raise ValueError(
                f"minibatch_size={self.minibatch_size} must be a multiple of rollout_fragment_length="
                f"{self.rollout_fragment_length} and at most train_batch_size_per_learner="
                f"{self.train_batch_size_per_learner}"
            )
        return self

    def update_size(self) -> int:
        """Agent steps per gradient update: `minibatch_size`, or the train batch in whole fragments."""
        if self.minibatch_size is not None:
            return self.minibatch_size
        fragments = max(1, self.train_batch_size_per_learner // self.rollout_fragment_length)
        return fragments * self.rollout_fragment_length


ALGORITHMS = ("IMPALA", "APPO")
"""The RLlib algorithms `--run` accepts."""

APPO_DEFAULTS: dict[str, Any] = {
    "clip_param": 0.4,
    "use_kl_loss": False,
    "kl_coeff": 1.0,
    "kl_target": 0.01,
    "circular_buffer_num_batches": 8,
    # One pass, not RLlib's 2: the learner keeps up with sampling, and reached 18 sooner on 2 cores
    # (docs/learning.md, section 9).
    "circular_buffer_iterations_per_batch": 1,
    "target_network_update_freq": 2,
}
"""APPO's settings under `--run APPO` when none is given: RLlib 2.60's APPO defaults, but one pass per batch."""

APPO_SAMPLES: dict[str, Any] = {
    # Samples of 3,200 agent steps, as 64 x 50 gives, so the same lag in updates, and V-trace's traces twice as
    # long: on two seeds APPO crossed 0 by 1.77 M agent steps, every 64 x 50 run at 2.04 M or later
    # (docs/learning.md, sections 20 and 24).
    "num_envs_per_env_runner": 32,
    "rollout_fragment_length": 100,
}
"""APPO's sample shape under `--run APPO` when none is given; IMPALA keeps TrainConfig's 64 emulators x 50 steps."""

ALGORITHM_DEFAULTS: dict[str, dict[str, Any]] = {"IMPALA": {}, "APPO": {**APPO_DEFAULTS, **APPO_SAMPLES}}
"""The first layer of every config: each algorithm's own defaults, beneath presets, files and --config."""


def check_algorithm_keys(config: TrainConfig, run: str) -> None:
    """Refuse settings that mean nothing to `run` (an APPO key under IMPALA), naming their algorithm (the Job's
    check: a ValueError)."""
    if run == "APPO":
        return
    foreign = [key for key in APPO_DEFAULTS if getattr(config, key) is not None]
    if foreign:
        raise ValueError(f"config key '{foreign[0]}' is an APPO setting and means nothing to {run}; "
                         f"train with --run APPO or drop it")


# Presets: named starting points under the config file and command line.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # A laptop smoke run: one env keeps whole episodes short, so a real return arrives in seconds.
    "smoke": {
        "config": {
            "num_env_runners": 1,
            "num_envs_per_env_runner": 1,
            "rollout_fragment_length": 50,
            "train_batch_size_per_learner": 500,
            "min_time_s_per_iteration": 2,
        },
        "stop": {"episodes_total": 2, "time_total_s": 100},
        "checkpoint_freq": 0,
    },
    # Time to score on one machine with 16 cores and a GPU: a GPU learner, 15 env runners of 64
    # emulators, batches large enough to keep the GPU busy.
    "fast-gpu": {
        "config": {
            "num_gpus_per_learner": 1,
            "num_envs_per_env_runner": 64,
            "rollout_fragment_length": 50,
            "train_batch_size_per_learner": 2000,
            "lr": 0.0006,
            "min_time_s_per_iteration": 10,
        },
        "stop": {"episode_reward_mean": 18},
    },
    # The article's settings (Ray 0.8.3), translated to today's names.
    "article": {
        "config": {
            "num_gpus_per_learner": 1,
            "num_env_runners": 13,
            "rollout_fragment_length": 50,
            "train_batch_size_per_learner": 1000,
            "num_epochs": 2,
            "lr": 0.0005,  # RLlib 0.8.3's IMPALA default, which the article kept
            "num_gpu_loader_threads": 2,
            "dim": 42,
        },
        "stop": {"episode_reward_mean": 18, "time_total_s": 3600},
    },
}

DEFAULT_STOP = {"episode_reward_mean": 18.0}


def build_config(layers: list[dict[str, Any]], run: str = "IMPALA") -> TrainConfig:
    """Merge `run`'s defaults and the translated layers (later wins) into a validated TrainConfig."""
    return train_config(merge(layers, run))


def build_experiment(layers: list[dict[str, Any]], run: str = "IMPALA", num_samples: int = 1
                     ) -> tuple[TrainConfig, Optional[Sweep]]:
    """Like `build_config` where values may be search spaces: the settings every trial shares (a key with a space
    keeps its default there) and the sweep, None for a single trial. Every value a space can produce is checked."""
    plain, sweep = resolve(merge(layers, run), train_config, num_samples)
    return train_config(plain), sweep


def merge(layers: list[dict[str, Any]], run: str) -> dict[str, Any]:
    merged: dict[str, Any] = dict(ALGORITHM_DEFAULTS[run])
    for layer in layers:
        merged.update(layer)
    return merged


def train_config(values: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of `values`, or a UsageError naming the config key it refuses."""
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        raise UsageError(validation_line(err, lambda loc: f"config key '{'.'.join(map(str, loc))}'" if loc
                                         else "config")) from None


def gpus_needed(config: TrainConfig) -> float:
    return config.num_gpus_per_learner * max(1, config.num_learners)


def check_gpus(config: TrainConfig, available: float, where: str) -> None:
    """Refuse a GPU the learner asks for but `where` (this machine, the Ray cluster, a VM size) lacks."""
    need = gpus_needed(config)
    if need > available:
        raise UsageError(
            f"num_gpus_per_learner={config.num_gpus_per_learner:g} (the article's num_gpus) asks for {need:g} GPU(s) "
            f"but {where} has {available:g}; set \"num_gpus\": 0 in --config to train on the CPU"
        )
