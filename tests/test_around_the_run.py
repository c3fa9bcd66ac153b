"""Around a run: the agent on video, learning curves, TensorBoard and MLflow, as a new user would try them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_cli, run_dirs
from pong_train.loggers import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> dict:
    """One smoke run with --mlflow into a file store, shared by the checks below."""
    root = tmp_path_factory.mktemp("around")
    storage, mlruns = root / "runs", root / "mlruns"
    proc = run_cli("--preset", "smoke", "--mlflow", f"file://{mlruns}", "--mlflow-experiment", "pong-train", "--json",
                   "--storage-path", str(storage), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    return {"root": root, "run_dir": run_dir, "mlruns": mlruns, "stdout": proc.stdout}


def test_evaluate_plays_the_last_checkpoint_and_writes_a_video_opencv_reads(smoke_run):
    import cv2

    [checkpoint] = sorted(smoke_run["run_dir"].glob("*/checkpoint_*"))[-1:]
    video = smoke_run["root"] / "play.mp4"
    proc = run_cli("evaluate", str(checkpoint), "--episodes", "1", "--video", str(video), "--seed", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 episode(s): mean return" in proc.stdout
    episode_return = float(proc.stdout.split("episode 1: return ")[1].split()[0])
    assert -21 <= episode_return <= 21
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames += 1
        assert frame.shape == (210, 160, 3)
    assert frames > 100  # a whole Pong game, one frame per agent step


def test_plot_writes_a_readable_png_at_the_end_and_on_demand(smoke_run):
    from PIL import Image

    assert (smoke_run["run_dir"] / "curve.png").exists()  # made at the end of the run
    out = smoke_run["root"] / "curve.png"
    proc = run_cli("plot", str(smoke_run["run_dir"]), str(smoke_run["run_dir"]), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 300
    bad = run_cli("plot", str(smoke_run["root"]))
    assert bad.returncode == 2 and "no metrics.jsonl" in bad.stderr


def test_mlflow_has_the_article_names_for_the_run(smoke_run, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to read a file store
    mlflow.set_tracking_uri(f"file://{smoke_run['mlruns']}")
    runs = mlflow.search_runs(experiment_names=["pong-train"], output_format="list")
    [run] = [r for r in runs if r.info.run_name == smoke_run["run_dir"].name]
    rows = read_metrics(smoke_run["run_dir"] / "metrics.jsonl")
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "episodes_total")] == [
        r["training_iteration"] for r in rows]
    assert run.data.metrics["episode_reward_mean"] == rows[-1]["episode_reward_mean"]
    assert run.data.params["env"] == "PongNoFrameskip-v4"


def test_mlflow_keeps_the_curve_the_summary_and_the_exported_policy_as_artifacts(smoke_run, monkeypatch, tmp_path):
    """What a model registry (Azure ML's, inside a job) registers a model from: the policy runs with onnxruntime."""
    import mlflow
    import numpy as np
    import onnxruntime

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(f"file://{smoke_run['mlruns']}")
    [run] = [r for r in mlflow.search_runs(experiment_names=["pong-train"], output_format="list")
             if r.info.run_name == smoke_run["run_dir"].name]
    client = mlflow.MlflowClient()
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"curve.png", "summary.json", "policy"}
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))).read_text())
    rows = read_metrics(smoke_run["run_dir"] / "metrics.jsonl")
    assert summary["training_iteration"] == rows[-1]["training_iteration"]
    assert summary["best_episode_reward_mean"] == max(r["episode_reward_mean"] for r in rows
                                                      if r["episode_reward_mean"] is not None)
    policy = client.download_artifacts(run.info.run_id, "policy/policy.onnx", str(tmp_path))
    session = onnxruntime.InferenceSession(policy)
    [frames] = session.get_inputs()
    logits = session.run(None, {frames.name: np.zeros((3, *frames.shape[1:]), dtype=np.uint8)})[0]
    assert logits.shape == (3, 6)  # one logit per Pong action, for each of a batch of frames


# What a user types in the folder they trained from, with no MLflow variable set.
SEARCH_RUNS = """
import json, mlflow
runs = mlflow.search_runs()
print(json.dumps(runs[["tags.mlflow.runName", "metrics.episode_reward_mean"]].to_dict("records")))
"""


def without_mlflow_variables(monkeypatch) -> None:
    for name in [name for name in os.environ if name.startswith("MLFLOW_")]:
        monkeypatch.delenv(name)


def test_bare_mlflow_logs_where_mlflow_reads_by_default(tmp_path, monkeypatch):
    without_mlflow_variables(monkeypatch)
    proc = run_cli("--preset", "smoke", "--storage-path", "runs", "--mlflow", "--json", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(tmp_path / "runs")
    assert (tmp_path / "mlflow.db").exists()
    search = subprocess.run([sys.executable, "-c", SEARCH_RUNS], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert search.returncode == 0, search.stderr[-3000:]
    [found] = json.loads(search.stdout.strip().splitlines()[-1])
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert found == {"tags.mlflow.runName": run_dir.name,
                     "metrics.episode_reward_mean": rows[-1]["episode_reward_mean"]}


def test_bare_mlflow_names_a_store_where_mlruns_already_holds_runs(tmp_path, monkeypatch):
    without_mlflow_variables(monkeypatch)
    (tmp_path / "mlruns" / "1").mkdir(parents=True)
    (tmp_path / "mlruns" / "1" / "meta.yaml").write_text("name: older runs\n")
    proc = run_cli("--preset", "smoke", "--storage-path", "runs", "--mlflow", "-q", cwd=tmp_path, timeout=300)
    assert_one_line_error(proc, "--mlflow ./mlruns", "sqlite:///mlflow.db")


def test_tensorboard_reads_the_events_with_both_metric_names(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = smoke_run["run_dir"].glob("*/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert "ray/tune/episode_reward_mean" in tags and "ray/tune/episodes_total" in tags
    assert "ray/tune/env_runners/episode_return_mean" in tags
    rows = read_metrics(smoke_run["run_dir"] / "metrics.jsonl")
    assert accumulator.Scalars("ray/tune/episodes_total")[-1].value == rows[-1]["episodes_total"]


def test_json_summary_is_the_last_line(smoke_run):
    summary = json.loads(smoke_run["stdout"].strip().splitlines()[-1])
    assert summary["status"] == "completed" and Path(summary["run_dir"]) == smoke_run["run_dir"]
    assert summary["episode_reward_mean"] is not None and summary["training_iteration"] >= 2
