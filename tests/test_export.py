"""The best checkpoint kept beside the latest ones, and the policy exported to ONNX and TorchScript files that play
and compute the checkpoint's own logits without Ray or RLlib."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, run_cli, run_dirs
from pong_train.loggers import read_metrics

PONG_ACTIONS = ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One smoke run checkpointing every iteration and keeping only the latest, exported to both formats."""
    root = tmp_path_factory.mktemp("export")
    storage = root / "runs"
    proc = run_cli("--preset", "smoke", "--checkpoint-freq", "1", "--checkpoint-keep", "1", "--quiet",
                   "--storage-path", str(storage), timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    files = {"onnx": root / "policy.onnx", "torchscript": root / "policy.pt"}
    for fmt, path in files.items():
        exported = run_cli("export", str(run_dir), "--format", fmt, "-o", str(path), timeout=600)
        assert exported.returncode == 0, exported.stderr[-3000:]
        assert f"wrote {path} ({fmt}" in exported.stdout
    return {"root": root, "run_dir": run_dir, "files": files}


def env_frames(run_dir: Path, count: int = 16) -> np.ndarray:
    """`count` real observations of the run's play env, a random policy acting."""
    from pong_train.evaluate import choose, load_policy, make_play_env

    env = make_play_env(load_policy(choose(run_dir, None)), render=False)
    rng = np.random.default_rng(0)
    frames = [env.reset(seed=0)[0]]
    while len(frames) < count:
        for _ in range(5):  # frames a few steps apart, so they differ
            obs, *_ = env.step(int(rng.integers(env.action_space.n)))
        frames.append(obs)
    env.close()
    return np.stack(frames)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_best_checkpoint_is_kept_beside_the_latest(trained):
    from pong_train.evaluate import MODULE_PATH

    [trial] = [p for p in trained["run_dir"].iterdir() if p.is_dir()]
    rows = read_metrics(trained["run_dir"] / "metrics.jsonl")
    scores = [row["episode_reward_mean"] for row in rows if row["episode_reward_mean"] is not None]
    assert len(rows) >= 2 and scores
    assert [p.name for p in trial.glob("checkpoint_*")] == [f"checkpoint_{len(rows) - 1:06d}"]  # Tune's latest one
    best = json.loads((trial / "best_checkpoint" / "best.json").read_text())
    first_best = next(row for row in rows if row["episode_reward_mean"] == max(scores))
    assert best["episode_reward_mean"] == max(scores)
    assert best["training_iteration"] == first_best["training_iteration"]
    assert best["checkpoint"] == f"checkpoint_{first_best['training_iteration'] - 1:06d}"
    assert (trial / "best_checkpoint" / MODULE_PATH).is_dir()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_evaluate_plays_the_best_checkpoint_by_default_and_the_latest_when_asked(trained):
    run_dir = trained["run_dir"]
    best = run_cli("evaluate", str(run_dir), "--episodes", "1", "--seed", "1", timeout=600)
    assert best.returncode == 0, best.stderr[-3000:]
    assert best.stdout.startswith(f"policy: {run_dir}/") and "/best_checkpoint (iteration " in best.stdout
    assert "episode 1: return " in best.stdout
    latest = run_cli("evaluate", str(run_dir), "--checkpoint", "latest", "--episodes", "1", timeout=600)
    assert latest.returncode == 0, latest.stderr[-3000:]
    [checkpoint] = run_dir.glob("*/checkpoint_*")
    assert latest.stdout.startswith(f"policy: {checkpoint}\n")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_exported_policy_computes_the_checkpoints_logits_on_real_frames(trained):
    import onnxruntime
    import torch

    from pong_train.evaluate import best_checkpoint, load_module

    frames = env_frames(trained["run_dir"])
    assert frames.dtype == np.uint8 and frames.shape == (16, 42, 42, 4)
    module = load_module(best_checkpoint(trained["run_dir"]))
    with torch.no_grad():
        expected = module.forward_inference({"obs": torch.from_numpy(frames)})["action_dist_inputs"].numpy()
    assert expected.shape == (16, len(PONG_ACTIONS))
    session = onnxruntime.InferenceSession(str(trained["files"]["onnx"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"frames": frames})[0], expected, atol=1e-4)
    np.testing.assert_allclose(session.run(["logits"], {"frames": frames[:1]})[0], expected[:1], atol=1e-4)
    scripted = torch.jit.load(str(trained["files"]["torchscript"]))
    with torch.no_grad():
        np.testing.assert_allclose(scripted(torch.from_numpy(frames)).numpy(), expected, atol=1e-4)


# What a user of the file alone runs: onnxruntime or torch, with Ray and RLlib impossible to import.
WITHOUT_RAY = """
import json, sys
sys.modules["ray"] = None
import numpy as np, onnxruntime, torch
frames = np.random.default_rng(0).integers(0, 256, (5, 42, 42, 4), dtype=np.uint8)
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
card = json.loads(session.get_modelmeta().custom_metadata_map["pong_train"])
onnx_logits = session.run([card["output_name"]], {card["input_name"]: frames})[0]
extra = {"pong_train.json": ""}
scripted = torch.jit.load(sys.argv[2], _extra_files=extra)
torch_logits = scripted(torch.from_numpy(frames)).detach().numpy()
print(json.dumps({"card": card, "torch_card": json.loads(extra["pong_train.json"]),
                  "shapes": [list(onnx_logits.shape), list(torch_logits.shape)],
                  "gap": float(np.abs(onnx_logits - torch_logits).max())}))
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_files_run_without_ray_and_say_what_they_need(trained):
    files = trained["files"]
    proc = subprocess.run([sys.executable, "-c", WITHOUT_RAY, str(files["onnx"]), str(files["torchscript"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["shapes"] == [[5, 6], [5, 6]] and out["gap"] < 1e-4
    card = out["card"]
    assert card["format"] == "onnx" and out["torch_card"]["format"] == "torchscript"
    assert card["action_meanings"] == PONG_ACTIONS
    assert card["observation_shape"] == [42, 42, 4]
    assert (card["env"], card["dim"], card["framestack"], card["frameskip"]) == ("PongNoFrameskip-v4", 42, 4, 4)
    assert card["checkpoint"].endswith("/best_checkpoint") and card["episode_reward_mean"] is not None


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_evaluate_plays_an_exported_file(trained, fmt):
    path = trained["files"][fmt]
    proc = run_cli("evaluate", str(path), "--episodes", "1", "--seed", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"policy: {path} ({fmt} from ")
    episode_return = float(proc.stdout.split("episode 1: return ")[1].split()[0])
    assert -21 <= episode_return <= 21


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_bad_input_to_a_trained_run_is_one_line(trained):
    run_dir, onnx_file = trained["run_dir"], trained["files"]["onnx"]
    assert_one_line_error(run_cli("export", str(run_dir), "-o", str(run_dir)), "is a folder")
    assert_one_line_error(run_cli("export", str(onnx_file), "-o", str(trained["root"] / "again.onnx")),
                          "already an exported policy")
    assert_one_line_error(run_cli("evaluate", str(onnx_file), "--checkpoint", "best"), "chooses within a run")
    assert_one_line_error(run_cli("evaluate", str(run_dir), "--checkpoint", "checkpoint_999999"),
                          "no such checkpoint")


@pytest.fixture
def untrained(tmp_path: Path) -> Path:
    """A folder with no checkpoint, and a file that is no policy."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.onnx").write_text("not a model\n")
    return tmp_path


@pytest.mark.parametrize("args, fragments", [
    (["export", "{root}/empty", "-o", "{root}/p.onnx"], ["no pong-train checkpoint"]),
    (["export", "{root}/nowhere", "-o", "{root}/p.onnx"], ["no such run directory"]),
    (["export", "{root}/empty", "--format", "tflite", "-o", "{root}/p.onnx"], ["--format", "tflite"]),
    (["export", "{root}/empty", "-o", "{root}/missing/p.onnx"], ["does not exist"]),
    (["export", "{root}/empty", "-o", "{root}/junk.onnx/p.onnx"], ["is not a folder"]),
    (["evaluate", "{root}/junk.onnx"], ["not an ONNX or TorchScript policy"]),
    (["evaluate", "{root}/empty", "--checkpoint", "best"], ["no best checkpoint kept", "--checkpoint latest"]),
    (["evaluate"], ["give a run directory"]),
])
def test_bad_input_is_one_line_and_exit_2(untrained, args, fragments):
    assert_one_line_error(run_cli(*(arg.format(root=untrained) for arg in args), timeout=120), *fragments)


@pytest.mark.parametrize("args, package", [
    (["export", "{root}/empty", "-o", "{root}/p.onnx"], "onnx"),
    (["evaluate", "{root}/junk.onnx"], "onnxruntime"),
])
def test_a_missing_package_names_the_extra(untrained, args, package):
    """onnx and onnxruntime come with the export extra; without them, one line says so."""
    hidden = untrained / "hidden" / package
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    proc = run_cli(*(arg.format(root=untrained) for arg in args), env={"PYTHONPATH": str(hidden.parent)}, timeout=120)
    assert_one_line_error(proc, f"{package} is not installed", "pong-train[export]")


def test_float_frames_of_rllibs_python_wrappers_turn_back_into_the_uint8_frames_exactly():
    """A policy trained with vector_env False plays RLlib's wrappers, whose frames are x / 128 - 1 in float32."""
    from pong_train.export import uint8_frames

    pixels = np.arange(256, dtype=np.uint8).reshape(4, 4, 16)
    assert np.array_equal(uint8_frames(pixels.astype(np.float32) / 128.0 - 1.0), pixels)
    assert uint8_frames(pixels) is pixels
