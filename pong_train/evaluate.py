"""Watch a trained agent: play episodes from a checkpoint or an exported policy, report the returns, record a video."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pong_train import atari
from pong_train.errors import UsageError
from pong_train.job import JOB_FILE, Job
from pong_train.rllib_config import env_settings
from pong_train.rundir import BEST_CHECKPOINT, read_best

MODULE_PATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"
CHOICES = ("best", "latest")


@dataclasses.dataclass
class Policy:
    """What plays: one observation to its action logits, and the env whose frames it was trained on."""

    logits: Callable[[np.ndarray], np.ndarray]
    env_config: dict[str, Any]
    """The env settings of rllib_config.env_settings: the ALE id and the frames' shape."""
    vector_env: bool
    """Trained on ale-py's vector env (TrainConfig.vector_env), whose preprocessing make_frames_env repeats."""
    source: str
    """What is played, in words, for the user."""


def choose(target: Path | None, choice: str | None) -> Path:
    """The checkpoint folder or exported policy file that `evaluate TARGET --checkpoint CHOICE` means (as an absolute
    path: RLlib reads checkpoints through pyarrow, which refuses relative ones). A run or trial directory gives its
    best checkpoint (or its latest, where none is kept) unless `choice` says which; a CHOICE that is a path names it
    as given or under TARGET."""
    if choice is not None and choice not in CHOICES:
        named = [Path(choice)]
        if target is not None and not Path(choice).is_absolute():
            named += [target / choice, *sorted(target.glob(f"*/{choice}"))]
        found = next((path for path in named if path.exists()), None)
        if found is None:
            under = f" (nor under {target})" if target else ""
            raise UsageError(f"--checkpoint {choice}: no such checkpoint or file{under}")
        return choose(found, None)
    if target is None:
        raise UsageError("give a run directory or a checkpoint (or --checkpoint PATH)")
    target = target.resolve()
    if not target.exists():
        raise UsageError(f"{target}: no such run directory, checkpoint or file")
    if target.is_file() or (target / MODULE_PATH).is_dir():
        if choice is not None:
            raise UsageError(f"--checkpoint {choice}: chooses within a run directory; {target} is a checkpoint or file")
        return target
    if choice != "latest" and (best := best_checkpoint(target)) is not None:
        return best
    if choice == "best":
        raise UsageError(f"{target}: no best checkpoint kept (one is, once a checkpoint follows a finished episode); "
                         "--checkpoint latest plays the latest")
    return latest_checkpoint(target)


def latest_checkpoint(path: Path) -> Path:
    """The latest of Tune's checkpoints under a run or trial directory."""
    found = sorted(path.glob("**/checkpoint_*/" + str(MODULE_PATH)))
    if not found:
        raise UsageError(f"{path}: no pong-train checkpoint here (expected checkpoint_*/{MODULE_PATH})")
    return max((p.parents[3] for p in found), key=lambda c: (c.stat().st_mtime, c.name))


def best_checkpoint(path: Path) -> Path | None:
    """The best of the kept best checkpoints under a run or trial directory (one per trial), or None."""
    kept = [(best.episode_reward_mean, folder) for folder in path.glob(f"**/{BEST_CHECKPOINT}")
            if (folder / MODULE_PATH).is_dir() and (best := read_best(folder.parent)) is not None]
    return max(kept)[1] if kept else None


def trained_job_of(checkpoint: Path) -> Job:
    """The job the checkpoint was trained by: its run directory's job.json, the run's one record, and in an
    experiment of several trials, the trial's own settings (its folder, `trial_<index>`, is the run's child)."""
    run_dir = next((folder for folder in checkpoint.parents if (folder / JOB_FILE).is_file()), None)
    if run_dir is None:
        raise UsageError(f"{checkpoint}: not inside a pong-train run directory (no {JOB_FILE} above it), so the "
                         "frames it was trained on are unknown")
    job = Job.load(run_dir / JOB_FILE)
    if job.sweep is None:
        return job
    trial = next(folder.name for folder in [checkpoint, *checkpoint.parents] if folder.parent == run_dir)
    return job.trials()[int(trial.removeprefix("trial_"))]


def describe(checkpoint: Path) -> str:
    best = read_best(checkpoint.parent) if checkpoint.name == BEST_CHECKPOINT else None
    if best is None:
        return str(checkpoint)
    return f"{checkpoint} (iteration {best.training_iteration}, episode_reward_mean {best.episode_reward_mean:+.2f})"


def load_module(checkpoint: Path) -> Any:
    """The checkpoint's RLModule, in inference mode."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    module = RLModule.from_checkpoint(checkpoint / MODULE_PATH)
    module.eval()
    return module


def load_policy(path: Path) -> Policy:
    """The policy of the checkpoint folder `path` (see `choose`): its RLModule, and the frames it was trained on."""
    import torch

    job = trained_job_of(path)
    module = load_module(path)

    def logits(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module.forward_inference({"obs": torch.from_numpy(obs[None])})["action_dist_inputs"][0].numpy()

    return Policy(logits, env_settings(job.env, job.config), job.config.vector_env, describe(path))


def make_play_env(policy: Policy, render: bool) -> Any:
    """An env whose frames look like the ones the policy was trained on."""
    settings = {**policy.env_config, "render_mode": "rgb_array" if render else None}
    return atari.make_frames_env(settings) if policy.vector_env else atari.make_env(settings)


def play(policy: Policy, episodes: int, video: Path | None, explore: bool, seed: int | None) -> list[float]:
    """Play `episodes` episodes with `policy`; returns each episode's (unclipped) return."""
    import torch

    torch.set_num_threads(1)  # one frame at a time gains nothing from threads, and spinning ones hurt when busy
    env = make_play_env(policy, render=video is not None)
    writer = VideoWriter(video) if video else None
    rng = np.random.default_rng(seed)
    returns = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=None if seed is None else seed + episode)
            done, total = False, 0.0
            while not done:
                logits = policy.logits(np.asarray(obs))
                if explore:
                    probs = np.exp(logits - logits.max())
                    action = int(rng.choice(len(probs), p=probs / probs.sum()))
                else:
                    action = int(logits.argmax())
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
                if writer:
                    writer.add(env.render())
            returns.append(total)
            print(f"episode {episode + 1}: return {total:+.0f}", flush=True)
    finally:
        env.close()
        if writer:
            writer.close()
    return returns


def summary(returns: list[float]) -> str:
    spread = statistics.pstdev(returns) if len(returns) > 1 else 0.0
    return (f"{len(returns)} episode(s): mean return {statistics.fmean(returns):+.2f} +- {spread:.2f} "
            f"(min {min(returns):+.0f}, max {max(returns):+.0f})")


class VideoWriter:
    """Frames to an .mp4 (OpenCV) or .gif (Pillow) file."""

    FPS = 15  # one frame per agent step: the emulator's 60 Hz over a frame skip of 4

    def __init__(self, path: Path) -> None:
        if path.suffix.lower() not in (".mp4", ".gif"):
            raise UsageError(f"--video {path}: give a .mp4 or .gif file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.frames: list[np.ndarray] = []
        self._cv_writer = None

    def add(self, frame: np.ndarray) -> None:
        if self.path.suffix.lower() == ".gif":
            self.frames.append(frame)
            return
        import cv2

        if self._cv_writer is None:
            height, width = frame.shape[:2]
            self._cv_writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.FPS,
                                              (width, height))
        self._cv_writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._cv_writer is not None:
            self._cv_writer.release()
        elif self.frames:
            from PIL import Image

            images = [Image.fromarray(f) for f in self.frames]
            images[0].save(self.path, save_all=True, append_images=images[1:], duration=1000 // self.FPS, loop=0)
