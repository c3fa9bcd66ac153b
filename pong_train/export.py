"""The policy alone, out of a checkpoint: an ONNX or TorchScript file that runs without Ray or RLlib."""

from __future__ import annotations

import copy
import importlib
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from pong_train import __version__
from pong_train.errors import UsageError, first_line
from pong_train.evaluate import Policy, choose, load_module, trained_job_of
from pong_train.rundir import BEST_CHECKPOINT, read_best

INSTALL_HINT = "pip install 'pong-train[export]'"
METADATA_KEY = "pong_train"
"""The card's key in an ONNX file's metadata_props; in a TorchScript file it is the extra file `pong_train.json`."""
INPUT, OUTPUT = "frames", "logits"
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript"}


class PolicyCard(BaseModel):
    """What a user of an exported policy needs besides the network; stored inside the file."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    format: str
    """onnx or torchscript."""
    input_name: str = INPUT
    """The network's input: uint8 frames [batch, *observation_shape], channels last, the frames stacked oldest first."""
    output_name: str = OUTPUT
    """Its output: float32 action logits [batch, len(action_meanings)]; the greedy action is their argmax."""
    observation_shape: list[int]
    action_meanings: list[str]
    """ALE's name of each action, by index."""
    env: str
    """The ALE id the policy was trained on."""
    dim: int
    framestack: int
    frameskip: int
    vector_env: bool
    """Trained on ale-py's vector env's frames (else on RLlib's Python Atari wrappers'); `preprocessing` says how."""
    preprocessing: str
    algorithm: str
    checkpoint: str
    """The checkpoint folder it was exported from."""
    training_iteration: Optional[int] = None
    """The checkpoint's iteration and score, where known (a run's best checkpoint)."""
    episode_reward_mean: Optional[float] = None
    pong_train_version: str = __version__


class PolicyNetwork(torch.nn.Module):
    """An RLModule's inference path, uint8 frames to action logits, with RLlib's plain TorchCNN for pong-train's
    FastTorchCNN: the same layers and weights, without the reshapes by batch size that a trace would freeze."""

    def __init__(self, module: Any) -> None:
        from ray.rllib.core.models.torch.primitives import TorchCNN

        from pong_train.model import FastTorchCNN

        super().__init__()
        self.module = copy.deepcopy(module)
        for part in self.module.modules():
            if type(part) is FastTorchCNN:
                part.__class__ = TorchCNN

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.module.forward_inference({"obs": frames})["action_dist_inputs"]


def require(module: str) -> Any:
    """An optional package of the export extra, imported when needed; missing, one line says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{module} is not installed; it comes with the export extra: {INSTALL_HINT}") from None


def export_policy(target: Path | None, choice: str | None, fmt: str | None, out: Path) -> PolicyCard:
    """Write the policy of `evaluate TARGET --checkpoint CHOICE` to `out` as `fmt` (by default, what the file's
    suffix says, else onnx); returns the card stored with it."""
    fmt = fmt or SUFFIXES.get(out.suffix.lower(), "onnx")
    if fmt == "onnx":
        require("onnx")
    check_output(out)
    checkpoint = choose(target, choice)
    if checkpoint.is_file():
        raise UsageError(f"{checkpoint}: already an exported policy; give a run directory or a checkpoint")
    job = trained_job_of(checkpoint)
    network = PolicyNetwork(load_module(checkpoint)).eval()
    best = read_best(checkpoint.parent) if checkpoint.name == BEST_CHECKPOINT else None
    card = PolicyCard(
        format=fmt, observation_shape=list(network.module.observation_space.shape),
        action_meanings=action_meanings(job.env), env=job.env, dim=job.config.dim, framestack=job.config.framestack,
        frameskip=job.config.frameskip, vector_env=job.config.vector_env, preprocessing=preprocessing(job.config),
        algorithm=job.run, checkpoint=str(checkpoint), training_iteration=best.training_iteration if best else None,
        episode_reward_mean=best.episode_reward_mean if best else None)
    frames = torch.zeros((2, *card.observation_shape), dtype=torch.uint8)
    partial = out.with_name(out.name + ".partial")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' deprecation notices: nothing a user can act on
            WRITERS[fmt](network, frames, card, partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return card


def check_output(out: Path) -> None:
    """Refuse an output file that cannot be written before the checkpoint is loaded."""
    if out.is_dir():
        raise UsageError(f"-o {out}: is a folder; give a file name")
    folder = out.parent
    if not folder.is_dir():
        raise UsageError(f"-o {out}: {folder} " + ("is not a folder" if folder.exists() else "does not exist"))
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise UsageError(f"-o {out}: cannot write in {folder} ({err.strerror})") from None


def action_meanings(env_id: str) -> list[str]:
    import gymnasium as gym

    from pong_train import atari

    try:
        atari.validate_env_id(env_id)  # registers ALE's envs
    except ValueError as err:
        raise UsageError(f"the policy's env: {err}") from None
    env = gym.make(env_id)
    try:
        return list(env.unwrapped.get_action_meanings())
    finally:
        env.close()


def preprocessing(config: Any) -> str:
    """How to make the frames the policy takes, in words (pong_train.atari does it)."""
    if config.vector_env:
        return (f"ale-py AtariVectorEnv / gymnasium AtariPreprocessing: grayscale, area resize to "
                f"{config.dim}x{config.dim}, frame skip {config.frameskip} max-pooling the last two frames, up to 30 "
                f"no-ops and FIRE on reset, the last {config.framestack} frames stacked")
    return (f"RLlib wrap_atari_for_new_api_stack(dim={config.dim}, frameskip={config.frameskip}, "
            f"framestack={config.framestack}), its x / 128 - 1 scaling undone back to uint8")


def write_onnx(network: PolicyNetwork, frames: torch.Tensor, card: PolicyCard, out: Path) -> None:
    onnx = require("onnx")
    # The TorchScript-based exporter: the dynamo one would need onnxscript besides.
    torch.onnx.export(network, (frames,), str(out), dynamo=False, opset_version=17, input_names=[INPUT],
                      output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    model = onnx.load(str(out))
    onnx.helper.set_model_props(model, {METADATA_KEY: card.model_dump_json()})
    onnx.save(model, str(out))


def write_torchscript(network: PolicyNetwork, frames: torch.Tensor, card: PolicyCard, out: Path) -> None:
    traced = torch.jit.trace(network, (frames,))
    torch.jit.save(traced, str(out), _extra_files={f"{METADATA_KEY}.json": card.model_dump_json()})


WRITERS: dict[str, Callable[[PolicyNetwork, torch.Tensor, PolicyCard, Path], None]] = {
    "onnx": write_onnx, "torchscript": write_torchscript}


def load_exported(path: Path) -> Policy:
    """A policy file written by `export_policy`, ready to play (TorchScript files are zip archives, ONNX ones not)."""
    card, run = (load_torchscript if zipfile.is_zipfile(path) else load_onnx)(path)

    def logits(obs: np.ndarray) -> np.ndarray:
        return run(uint8_frames(obs)[None])[0]

    settings = {"id": card.env, "dim": card.dim, "framestack": card.framestack, "frameskip": card.frameskip}
    return Policy(logits, settings, card.vector_env, f"{path} ({card.format} from {card.checkpoint})")


def load_onnx(path: Path) -> tuple[PolicyCard, Callable[[np.ndarray], np.ndarray]]:
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # one frame at a time: threads only spin
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's errors share no base class but Exception
        raise UsageError(f"{path}: not an ONNX or TorchScript policy ({first_line(err)})") from None
    card = read_card(path, session.get_modelmeta().custom_metadata_map.get(METADATA_KEY))
    return card, lambda frames: session.run([card.output_name], {card.input_name: frames})[0]


def load_torchscript(path: Path) -> tuple[PolicyCard, Callable[[np.ndarray], np.ndarray]]:
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        network = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"{path}: not an ONNX or TorchScript policy ({first_line(err)})") from None
    card = read_card(path, extra[f"{METADATA_KEY}.json"])

    def run(frames: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network(torch.from_numpy(frames)).numpy()

    return card, run


def read_card(path: Path, text: str | bytes | None) -> PolicyCard:
    try:
        return PolicyCard.model_validate_json(text or "")
    except ValidationError:
        raise UsageError(f"{path}: not a policy exported by pong-train (its {METADATA_KEY} card is missing or "
                         "unreadable)") from None


def uint8_frames(obs: np.ndarray) -> np.ndarray:
    """The exported network's input from a play env's frames: RLlib's Python wrappers (vector_env False) give
    x / 128 - 1 in float32, which this undoes exactly."""
    if obs.dtype == np.uint8:
        return obs
    return np.rint((obs + 1.0) * 128.0).astype(np.uint8)



