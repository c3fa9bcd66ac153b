"""Seeds and sweeps: search spaces in `--config`, resolved into the experiment's trials before Ray starts.

A space is a one-key mapping in place of a value, in plain JSON or YAML: `{"grid_search": [...]}`, `{"choice":
[...]}`, `{"uniform": [a, b]}`, `{"loguniform": [a, b]}`, `{"randint": [a, b]}` (b excluded, as in Tune). With
`num_samples` N the grid is repeated N times and the random spaces are sampled N times, Tune's meaning. Every
trial is drawn here, from a recorded seed, so every value is checked before anything starts and a resumed
experiment has the very same trials.
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field

from pong_train.errors import UsageError

SPACES = ("grid_search", "choice", "uniform", "loguniform", "randint")


def is_space(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACES


class Sweep(BaseModel):
    """What the job keeps of a sweep: the spaces as given, how often to sample them, and the seed they are drawn
    with; `trials()` gives each trial's settings from it, the same every time."""

    model_config = ConfigDict(extra="forbid")

    spaces: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    """TrainConfig key -> its space, as given (`{"grid_search": [0.0005, 0.001]}`)."""
    num_samples: int = Field(default=1, ge=1)
    """Tune's num_samples: the grid repeated, random spaces sampled, this many times."""
    draw_seed: int = 0
    """The seed the random spaces are drawn with."""
    own_seeds: bool = True
    """Each trial trains with its own seed (1, 2, ...): set when the settings name no seed."""

    def configs(self, base: Any) -> list[Any]:
        """Each trial's settings: `base` (a TrainConfig) with the trial's values, validated."""
        return [type(base).model_validate({**base.model_dump(), **trial}) for trial in self.trials()]

    def trials(self) -> list[dict[str, Any]]:
        """Each trial's values for the keys with a space, grid values varying fastest last, as Tune orders them."""
        grid = {key: space["grid_search"] for key, space in self.spaces.items() if "grid_search" in space}
        rng = random.Random(self.draw_seed)
        drawn = []
        for _ in range(self.num_samples):
            for values in itertools.product(*grid.values()):
                trial = dict(zip(grid, values))
                for key, space in self.spaces.items():
                    if key not in grid:
                        trial[key] = draw(space, rng)
                if self.own_seeds:
                    trial["seed"] = len(drawn) + 1
                drawn.append(trial)
        return drawn


def draw(space: dict[str, list[Any]], rng: random.Random) -> Any:
    (kind, args), = space.items()
    if kind == "choice":
        return rng.choice(args)
    if kind == "uniform":
        return rng.uniform(*args)
    if kind == "loguniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    return rng.randrange(*args)  # randint: b excluded


def check_space(key: str, space: Any, validate: Callable[[str, Any], None]) -> None:
    """Refuse a space that is malformed or that can produce a value `validate(key, value)` refuses: every value
    of a grid or choice, both ends of a range (and a range that is empty or, for loguniform, not above 0)."""
    (kind, args), = space.items()
    if not isinstance(args, list) or not args:
        raise UsageError(f"config key '{key}': {kind} takes a non-empty list, got {args!r}")
    if kind in ("grid_search", "choice"):
        for value in args:
            validate(key, value)
        return
    numbers = len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if not numbers or args[0] >= args[1] or (kind == "randint" and not all(isinstance(a, int) for a in args)) or (
            kind == "loguniform" and args[0] <= 0):
        bounds = "two integers a < b" if kind == "randint" else "two numbers 0 < a < b" if kind == "loguniform" \
            else "two numbers a < b"
        raise UsageError(f"config key '{key}': {kind} takes [a, b], {bounds}; got {args!r}")
    validate(key, args[0])
    validate(key, args[1] - 1 if kind == "randint" else args[1])


def split_spaces(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, list[Any]]]]:
    """(the plain values, the spaces) of one layer of settings."""
    spaces = {key: value for key, value in values.items() if is_space(value)}
    return {key: value for key, value in values.items() if key not in spaces}, spaces


def resolve(values: dict[str, Any], build: Callable[[dict[str, Any]], Any], num_samples: int,
            draw_seed: Optional[int] = None) -> tuple[dict[str, Any], Optional[Sweep]]:
    """The plain settings and the sweep (None for a single trial) of merged settings that may hold spaces; each
    space's values are checked by `build` (which raises UsageError) with the plain settings around them."""
    plain, spaces = split_spaces(values)
    if not spaces and num_samples == 1:
        return plain, None

    def validate(key: str, value: Any) -> None:
        try:
            build({**plain, key: value})
        except UsageError as err:
            raise UsageError(f"{err} (a value of {key}'s space)") from None

    for key, space in spaces.items():
        check_space(key, space, validate)
    return plain, Sweep(spaces=spaces, num_samples=num_samples, own_seeds=plain.get("seed") is None and "seed" not in
                        spaces, draw_seed=random.SystemRandom().randrange(2**31) if draw_seed is None else draw_seed)


TRIAL_KEY = "pong_train_trial"
"""Where each trial's RLlib config holds its index: Tune's grid over it makes one trial per index."""


def param_space(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """One Tune param space for the trials' RLlib configs (as dicts, in trial order): a grid over the trial index,
    and each key that differs between trials taken from that trial's own config, so Tune sizes each trial's
    resources from its own settings."""
    from ray import tune

    space = dict(configs[0])
    for key in list(space):
        if any(config.get(key) != space[key] for config in configs[1:]):
            space[key] = tune.sample_from(lambda spec, key=key: configs[spec.config[TRIAL_KEY]][key])
    space[TRIAL_KEY] = tune.grid_search(list(range(len(configs))))
    return space


def trial_folder(trial: Any) -> str:
    """A Tune trial's folder in the run directory (Tune's `trial_dirname_creator`)."""
    return trial_folder_name(trial.config[TRIAL_KEY])


def trial_folder_name(index: int) -> str:
    """The folder of the trial `index` (from 0) in the run directory."""
    return f"trial_{index}"


def trial_folders(run_dir: Path) -> list[Path]:
    """The trials' folders of an experiment of several trials (`trial_0`, `trial_1`, ...), in trial order."""
    folders = [folder for folder in run_dir.glob("trial_*")
               if folder.is_dir() and folder.name.removeprefix("trial_").isdigit()]
    return sorted(folders, key=lambda folder: int(folder.name.removeprefix("trial_")))


def scheduler(kind: Optional[str], grace_steps: int, stop: dict[str, float]) -> Any:
    """Tune's scheduler for `--scheduler` (None: none): ASHA on episode_reward_mean at agent-step milestones from
    `grace_steps` on, growing threefold, up to the stop's timesteps_total where it has one."""
    if kind is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_steps = max(int(stop.get("timesteps_total", 0)), grace_steps * 27)  # room for a few milestones
    return ASHAScheduler(time_attr="timesteps_total", metric="episode_reward_mean", mode="max",
                         grace_period=grace_steps, max_t=max_steps, reduction_factor=3)
