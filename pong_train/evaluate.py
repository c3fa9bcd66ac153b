"""Watch a trained agent: play episodes from a checkpoint, report the returns, record a video."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from pong_train import atari
from pong_train.errors import UsageError
from pong_train.job import JOB_FILE, Job
from pong_train.rllib_config import env_settings

MODULE_PATH = Path("learner_group") / "learner" / "rl_module" / "default_policy"


def find_checkpoint(path: Path) -> Path:
    """A checkpoint folder, or the latest checkpoint under a run or trial directory (as an absolute path: RLlib
    reads checkpoints through pyarrow, which refuses relative ones)."""
    path = path.resolve()
    if (path / MODULE_PATH).is_dir():
        return path
    found = sorted(path.glob("**/checkpoint_*/" + str(MODULE_PATH)))
    if not found:
        raise UsageError(f"{path}: no pong-train checkpoint here (expected checkpoint_*/{MODULE_PATH})")
    return max((p.parents[3] for p in found), key=lambda c: (c.stat().st_mtime, c.name))


def trained_job_of(checkpoint: Path) -> Job:
    """The job the checkpoint was trained by: its run directory's job.json, the run's one record."""
    run_dir = next((folder for folder in checkpoint.parents if (folder / JOB_FILE).is_file()), None)
    if run_dir is None:
        raise UsageError(f"{checkpoint}: not inside a pong-train run directory (no {JOB_FILE} above it), so the "
                         "frames it was trained on are unknown")
    return Job.load(run_dir / JOB_FILE)


def make_play_env(checkpoint: Path, render: bool) -> Any:
    """An env whose frames look like the ones the policy was trained on."""
    job = trained_job_of(checkpoint)
    settings = {**env_settings(job.env, job.config), "render_mode": "rgb_array" if render else None}
    return atari.make_frames_env(settings) if job.config.vector_env else atari.make_env(settings)


def play(checkpoint_path: Path, episodes: int, video: Path | None, explore: bool, seed: int | None) -> list[float]:
    """Play `episodes` episodes with the checkpoint's policy; returns each episode's (unclipped) return."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    torch.set_num_threads(1)  # one frame at a time gains nothing from threads, and spinning ones hurt when busy
    checkpoint = find_checkpoint(checkpoint_path)
    env = make_play_env(checkpoint, render=video is not None)
    module = RLModule.from_checkpoint(checkpoint / MODULE_PATH)
    module.eval()
    writer = VideoWriter(video) if video else None
    rng = np.random.default_rng(seed)
    returns = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=None if seed is None else seed + episode)
            done, total = False, 0.0
            while not done:
                with torch.no_grad():
                    logits = module.forward_inference({"obs": torch.from_numpy(np.asarray(obs)[None])})[
                        "action_dist_inputs"][0].numpy()
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
