"""Search spaces resolved into trials before Ray starts: Tune's meaning of grid, samples and ranges, every value
checked, the same trials every time from the recorded seed."""

from __future__ import annotations

import pytest

from pong_train.config import train_config
from pong_train.errors import UsageError
from pong_train.trials import Sweep, resolve

pytestmark = pytest.mark.timeout(60)  # fast: no Ray


def test_a_grid_gives_one_trial_per_value_each_with_its_own_seed():
    plain, sweep = resolve({"lr": {"grid_search": [0.0005, 0.001]}, "gamma": 0.98}, train_config, 1)
    assert plain == {"gamma": 0.98}
    assert sweep.trials() == [{"lr": 0.0005, "seed": 1}, {"lr": 0.001, "seed": 2}]


def test_num_samples_repeats_the_grid_and_samples_the_random_spaces_each_time():
    _, sweep = resolve({"lr": {"loguniform": [1e-4, 1e-2]}, "dim": {"grid_search": [42, 84]},
                        "framestack": {"randint": [2, 5]}, "vf_share_layers": {"choice": [True, False]}},
                       train_config, 3, draw_seed=7)
    trials = sweep.trials()
    assert len(trials) == 6 and [t["dim"] for t in trials] == [42, 84] * 3
    assert all(1e-4 <= t["lr"] <= 1e-2 and t["framestack"] in (2, 3, 4) for t in trials)
    assert len({t["lr"] for t in trials}) == 6 and [t["seed"] for t in trials] == [1, 2, 3, 4, 5, 6]
    # Drawn from the recorded seed: the job file's sweep gives the same trials again (what a resume relies on).
    assert Sweep.model_validate_json(sweep.model_dump_json()).trials() == trials


def test_samples_alone_are_seeds_and_a_given_seed_is_kept():
    _, sweep = resolve({}, train_config, 2)
    assert sweep.trials() == [{"seed": 1}, {"seed": 2}]
    _, sweep = resolve({"seed": 5, "lr": {"grid_search": [0.001, 0.002]}}, train_config, 1)
    assert sweep.trials() == [{"lr": 0.001}, {"lr": 0.002}]
    assert resolve({"lr": 0.001}, train_config, 1) == ({"lr": 0.001}, None)


@pytest.mark.parametrize("space, fragments", [
    ({"lr": {"grid_search": [0.001, "fast"]}}, ["config key 'lr'", "valid number", '"fast"']),
    ({"lr": {"uniform": [-1, 0.01]}}, ["config key 'lr'", "greater than 0", "lr's space"]),
    ({"lr": {"uniform": [0.01, 0.001]}}, ["uniform takes [a, b]"]),
    ({"lr": {"loguniform": [0, 0.01]}}, ["loguniform takes [a, b], two numbers 0 < a < b"]),
    ({"framestack": {"randint": [1.5, 4]}}, ["randint takes [a, b], two integers"]),
    ({"framestack": {"randint": [0, 4]}}, ["config key 'framestack'", "greater than or equal to 1"]),
    ({"lr": {"choice": []}}, ["choice takes a non-empty list"]),
    ({"minibatch_size": {"grid_search": [100, 75]}}, ["minibatch_size=75 must be a multiple"]),
])
def test_a_space_that_can_produce_a_refused_value_is_one_line(space, fragments):
    with pytest.raises(UsageError) as refused:
        resolve(space, train_config, 1)
    assert "\n" not in str(refused.value)
    for fragment in fragments:
        assert fragment in str(refused.value), str(refused.value)


@pytest.mark.parametrize("space, fragment", [
    ('{"lr": {"grid_search": [0.001, "fast"]}}', "valid number"),
    ('{"lr": {"uniform": [-1, 0.01]}}', "greater than 0"),
])
def test_a_bad_space_on_the_command_line_is_one_line_and_leaves_no_run_directory(storage, space, fragment):
    from helpers import assert_one_line_error, run_cli

    proc = run_cli("--preset", "smoke", "--config", space, "--storage-path", str(storage))
    assert_one_line_error(proc, "config key 'lr'", fragment)
    assert not storage.exists()


def test_asha_judges_trials_on_the_article_figure_at_agent_step_milestones():
    from ray.tune.schedulers import ASHAScheduler

    from pong_train.trials import scheduler

    assert scheduler(None, 1000, {}) is None
    asha = scheduler("asha", 1_000_000, {"episode_reward_mean": 18, "timesteps_total": 50_000_000})
    assert isinstance(asha, ASHAScheduler)
    assert (asha._time_attr, asha._metric, asha._mode) == ("timesteps_total", "episode_reward_mean", "max")
    assert [milestone for milestone, _ in asha._brackets[0]._rungs][::-1] == [1_000_000, 3_000_000, 9_000_000,
                                                                                27_000_000]


def test_a_scheduler_without_several_trials_is_one_line(storage):
    from helpers import assert_one_line_error, run_cli

    proc = run_cli("--preset", "smoke", "--scheduler", "asha", "--storage-path", str(storage))
    assert_one_line_error(proc, "--scheduler asha", "needs several")
    assert not storage.exists()


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> dict:
    """The issue's first check, with --mlflow and --json: a smoke grid of two lr values, trained once for the checks
    below."""
    from helpers import run_cli, run_dirs

    root = tmp_path_factory.mktemp("grid")
    storage, mlruns = root / "runs", root / "mlruns"
    proc = run_cli("--preset", "smoke", "--config", '{"lr": {"grid_search": [0.0005, 0.001]}}', "--storage-path",
                   str(storage), "--mlflow", f"file://{mlruns}", "--mlflow-experiment", "sweeps", "--json", timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    return {"root": root, "run_dir": run_dir, "mlruns": mlruns, "stdout": proc.stdout}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_grid_trains_each_trial_in_its_own_folder_and_sums_them_up(grid):
    import json

    run_dir = grid["run_dir"]
    assert "2 trials of 2 CPUs each on the cluster's 2 CPUs: 1 at a time, the others queue" in grid["stdout"]
    assert "trial_0  iter    1" in grid["stdout"] and "trial_1  iter    1" in grid["stdout"]
    trials = json.loads((run_dir / "trials.json").read_text())
    assert [(t["trial"], t["settings"]["lr"], t["status"]) for t in trials] == [
        ("trial_0", 0.0005, "completed"), ("trial_1", 0.001, "completed")]
    for trial in trials:
        folder = run_dir / trial["trial"]
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) >= 2 and trial["timesteps_total"] == rows[-1]["timesteps_total"]
        assert json.loads((folder / "params.json").read_text())["lr"] == trial["settings"]["lr"]
        assert json.loads((folder / "trial.json").read_text())["config"]["lr"] == trial["settings"]["lr"]
        assert (folder / "curve.png").exists() and list(folder.glob("checkpoint_*"))
    assert json.loads((run_dir / "job.json").read_text())["sweep"]["spaces"] == {"lr": {"grid_search": [0.0005, 0.001]}}
    assert json.loads((run_dir / "run.json").read_text())["trials"] == {"trial_0": "completed", "trial_1": "completed"}
    summary = json.loads(grid["stdout"].strip().splitlines()[-1])
    assert summary["status"] == "completed" and [t["trial"] for t in summary["trials"]] == ["trial_0", "trial_1"]
    assert (run_dir / "curve.png").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mlflow_gets_a_parent_run_with_a_child_run_per_trial(grid, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this to read a file store
    mlflow.set_tracking_uri(f"file://{grid['mlruns']}")
    runs = mlflow.search_runs(experiment_names=["sweeps"], output_format="list")
    [parent] = [run for run in runs if run.info.run_name == grid["run_dir"].name]
    children = sorted((run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda run: run.info.run_name)
    assert [(run.info.run_name, run.data.params["lr"]) for run in children] == [("trial_0", "0.0005"), ("trial_1", "0.001")]
    assert all(run.info.status == "FINISHED" for run in [parent, *children])
    assert "grid_search" in parent.data.params["sweep"]
    client = mlflow.MlflowClient()
    for child in children:
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"curve.png", "summary.json", "policy"}
        rows = (grid["run_dir"] / child.info.run_name / "metrics.jsonl").read_text().splitlines()
        assert len(client.get_metric_history(child.info.run_id, "episodes_total")) == len(rows)
    assert "curve.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_plot_and_evaluate_take_the_experiments_run_directory(grid):
    from helpers import run_cli

    out = grid["root"] / "all.png"
    proc = run_cli("plot", str(grid["run_dir"]), "-o", str(out))
    assert proc.returncode == 0 and out.exists(), proc.stderr
    played = run_cli("evaluate", str(grid["run_dir"]), "--episodes", "1", "--seed", "1", timeout=300)
    assert played.returncode == 0, played.stderr[-3000:]
    assert "trial_" in played.stdout and "1 episode(s): mean return" in played.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_num_samples_trains_trials_of_different_seeds(storage):
    """The issue's second check."""
    import json

    from helpers import run_cli, run_dirs

    proc = run_cli("--preset", "smoke", "--num-samples", "2", "--storage-path", str(storage), "-q", timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    trials = json.loads((run_dir / "trials.json").read_text())
    assert [(t["trial"], t["settings"], t["status"]) for t in trials] == [
        ("trial_0", {"seed": 1}, "completed"), ("trial_1", {"seed": 2}, "completed")]
    seeds = [json.loads((run_dir / t["trial"] / "params.json").read_text())["seed"] for t in trials]
    assert seeds == [1, 2]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_sweep_killed_and_resumed_ends_with_every_trials_iterations_contiguous(storage):
    """The issue's fourth check: SIGKILL in the middle of a sweep, then --resume, and every trial's metrics.jsonl
    holds each iteration once, from 1 on, the killed trial's first rows kept."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from helpers import run_cli, run_dirs, wait_for_a_saved_checkpoint
    from pong_train.loggers import read_metrics

    started = time.time()
    roomy_stop = {"episodes_total": 6, "time_total_s": 200}
    proc = subprocess.Popen([sys.executable, "-m", "pong_train", "--preset", "smoke", "--config",
                             '{"lr": {"grid_search": [0.0005, 0.001]}}', "--checkpoint-freq", "1", "--stop",
                             json.dumps(roomy_stop), "--storage-path", str(storage), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        first = [path for path in storage.glob("*/trial_0/metrics.jsonl") if len(read_metrics(path)) >= 4]
        if first:
            break
        time.sleep(0.5)
    assert first, "trial_0 wrote fewer than 4 rows in 300 s"
    wait_for_a_saved_checkpoint(storage, started, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    [run_dir] = run_dirs(storage)
    before = [row["training_iteration"] for row in read_metrics(run_dir / "trial_0" / "metrics.jsonl")]

    resumed = run_cli("--resume", str(run_dir), "-q", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for trial in ("trial_0", "trial_1"):
        taken = [row["training_iteration"] for row in read_metrics(run_dir / trial / "metrics.jsonl")]
        assert taken == list(range(1, len(taken) + 1)) and len(taken) >= 2, (trial, taken)
    after = [row["training_iteration"] for row in read_metrics(run_dir / "trial_0" / "metrics.jsonl")]
    assert after[:4] == before[:4]
    trials = json.loads((run_dir / "trials.json").read_text())
    assert [(t["trial"], t["status"]) for t in trials] == [("trial_0", "completed"), ("trial_1", "completed")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_failing_trial_leaves_the_others_to_finish_and_the_experiment_exits_1(storage):
    """A network too big for its frames (a 20x20 kernel over an 11x11 map) fails its trial as the trial's RLModule is
    built, on Ray's side; the other trial trains to its stop."""
    import json

    from helpers import run_cli, run_dirs

    too_big = [[16, 4, 2, "same"], [32, 4, 2, "same"], [256, 20, 1, "valid"]]
    proc = run_cli("--preset", "smoke", "--config", json.dumps({"conv_filters": {"grid_search": [too_big, None]}}),
                   "--storage-path", str(storage), "-q", timeout=500)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "pong-train: trial_0 failed:" in proc.stderr and "Traceback" not in proc.stderr
    [run_dir] = run_dirs(storage)
    trials = json.loads((run_dir / "trials.json").read_text())
    assert [(t["trial"], t["status"]) for t in trials] == [("trial_0", "failed"), ("trial_1", "completed")]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
