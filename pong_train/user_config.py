"""What users write: `--config` JSON (also in the article's quoted form), config files, and the article's
RLlib 0.8.3 keys translated to TrainConfig's fields, with a note for each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import yaml

from pong_train.config import TrainConfig
from pong_train.errors import UsageError, closest, first_line

# The article's RLlib 0.8.3 keys, translated to the field that means the same today.
# Each entry: old key -> (new key, why).
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "num_workers": ("num_env_runners", "workers are env runners"),
    "num_envs_per_worker": ("num_envs_per_env_runner", "workers are env runners"),
    "num_cpus_per_worker": ("num_cpus_per_env_runner", "workers are env runners"),
    "sample_batch_size": ("rollout_fragment_length", "renamed in Ray 0.8.5"),
    "train_batch_size": ("train_batch_size_per_learner", "batches are sized per learner"),
    "num_sgd_iter": ("num_epochs", "renamed in Ray 2.10"),
    "num_gpus": ("num_gpus_per_learner", "the learner owns the GPU"),
    "num_data_loader_buffers": ("num_gpu_loader_threads", "the learner's GPU loader"),
    "min_iter_time_s": ("min_time_s_per_iteration", "renamed in Ray 1.x"),
    "model.dim": ("dim", "frames are resized by the Atari preprocessing"),
    "model.conv_filters": ("conv_filters", "RLModule model config"),
    "model.fcnet_hiddens": ("head_fcnet_hiddens", "RLModule model config"),
    "model.vf_share_layers": ("vf_share_layers", "RLModule model config"),
    "model.framestack": ("framestack", "4 frames when true"),
}
CONVERTED_VALUES: dict[str, Callable[[Any], Any]] = {
    "model.framestack": lambda v: 4 if v is True else 1 if v is False else v,
}
"""The legacy keys whose values change form too; every other one keeps its value."""

# Old keys that mean nothing on RLlib's new API stack, and why.
REJECTED_KEYS: dict[str, str] = {
    "callbacks": "RLlib 2.60 takes callback classes, not a dict of functions; "
    "observe results with a plugin's pong_train_result_loggers hook instead",
    "env": "give the environment with --env",
    "sample_async": "IMPALA's env runners always sample asynchronously now",
    "replay_proportion": "IMPALA's replay buffer is gone from RLlib's new API stack",
    "replay_buffer_num_slots": "IMPALA's replay buffer is gone from RLlib's new API stack",
    "num_multi_gpu_tower_stacks": "multi-GPU towers are gone; use num_learners with num_gpus_per_learner",
    "monitor": "gym's monitor is gone",
    "eager": "pong-train always trains with torch",
    "use_pytorch": "pong-train always trains with torch",
    "model.use_lstm": "pong-train's Pong model has no LSTM",
}

FRAMEWORKS = {"torch"}


def _flatten_model(raw: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in raw.items() if k != "model"}
    model = raw.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise UsageError(f"config key 'model' must be a JSON object, got {json.dumps(model, default=str)}")
        flat.update({f"model.{k}" if isinstance(k, str) else k: v for k, v in model.items()})
    return flat


def _closest(key: str) -> str:
    match = closest(key, [*TrainConfig.model_fields, *LEGACY_KEYS])
    return f"; did you mean '{match}'?" if match else f"; valid keys: {', '.join(TrainConfig.model_fields)}"


def translate(raw: dict[str, Any], source: str, notes: list[str]) -> dict[str, Any]:
    """Turn a user's config mapping (old or new names) into TrainConfig field values.

    Translated keys add a one-line note to `notes`; meaningless and unknown keys raise UsageError.
    """
    if not isinstance(raw, dict):
        raise UsageError(f"{source} must be a JSON object like '{{\"num_workers\": 1}}', got {json.dumps(raw, default=str)}")
    out: dict[str, Any] = {}
    for key, value in _flatten_model(raw).items():
        if not isinstance(key, str):
            raise UsageError(f"{source}: keys must be strings, got {key!r}")
        if key == "framework":
            if not isinstance(value, str) or value not in FRAMEWORKS:
                raise UsageError(f"{source}: framework {value!r} is not supported; pong-train trains with torch")
            continue
        if key in REJECTED_KEYS:
            raise UsageError(f"{source}: key '{key}' has no meaning in Ray 2.60: {REJECTED_KEYS[key]}")
        if key in LEGACY_KEYS:
            new_key, why = LEGACY_KEYS[key]
            value = CONVERTED_VALUES.get(key, lambda same: same)(value)
            shown = json.dumps(value, default=str)
            notes.append(f"{source}: {key}={shown} -> {new_key}={shown} ({why})")
            key = new_key
        if key not in TrainConfig.model_fields:
            raise UsageError(f"{source}: unknown key '{key}'{_closest(key)}")
        out[key] = value
    return out


def parse_json_arg(text: str, option: str) -> Any:
    """Parse a JSON option value, also in the article's quoted form `'{"num_gpus": 1}'`."""
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == "'":
        stripped = stripped[1:-1]
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as err:
        raise UsageError(f"{option} is not valid JSON ({err.msg} at column {err.colno}): {text}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option} must be a JSON object like '{{\"key\": value}}', got: {text}")
    return value


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file: the same keys as --config, plus an optional `stop` mapping."""
    try:
        text = path.read_text()
    except OSError as err:
        raise UsageError(f"cannot read --config-file {path}: {err.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"--config-file {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: "
                         f"{first_line(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config-file {path} must hold a mapping of config keys")
    return data
