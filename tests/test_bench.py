"""`pong-train bench` in its tiny mode: proves the benchmark runs end to end; it is not a timed test."""

from __future__ import annotations

import json
import os

import pytest

from helpers import run_cli


def test_stock_baseline_is_rllib_impala_as_it_comes():
    """The baseline goes through the core's translation; what comes out must still be RLlib's own IMPALA,
    not pong-train's defaults, loss, env or callbacks."""
    from ray.rllib.algorithms.impala import IMPALAConfig

    from pong_train import atari
    from pong_train.benchmarks.speed import BenchSettings, stock_config

    stock, rllib = stock_config(BenchSettings(cores=4)), IMPALAConfig()
    for key in ("lr", "gamma", "entropy_coeff", "vf_loss_coeff", "grad_clip", "num_epochs", "learner_class",
                "train_batch_size_per_learner", "create_env_on_local_worker", "restart_failed_env_runners",
                "gym_env_vectorize_mode", "callbacks_class", "callbacks_on_algorithm_init", "callbacks_on_train_result"):
        assert getattr(stock, key) == getattr(rllib, key), key
    assert (stock.env, stock.num_env_runners, stock.num_envs_per_env_runner, stock.num_learners) == (
        atari.RLLIB_ENV_NAME, 3, 16, 0)


@pytest.mark.slow
def test_tiny_bench_reports_every_figure_and_writes_its_files(tmp_path):
    proc = run_cli("bench", "--tiny", "--json", "--storage-path", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("ratio_vs_stock", "sampling_fraction_of_limit", "end_to_end_steps_per_s", "stock_steps_per_s",
                "appo_steps_per_s", "limit_frames_per_s"):
        assert report[key] > 0, key
    # Each side's CPU share: measured from the processes' CPU clocks, so above zero and at most the cores there are.
    assert set(report["busy"]) == {"stock", "default", "appo"}
    for sides in report["busy"].values():
        assert 0 < sides["learner"] <= os.cpu_count() + 0.2 and 0 < sides["env_runners"] <= os.cpu_count() + 0.2
    # The learner's cost per agent step and pass: its process's CPU time over the steps trained, for each algorithm.
    assert set(report["learner_ms_per_step_pass"]) == {"stock", "default", "appo"}
    assert all(0 < ms < 1000 for ms in report["learner_ms_per_step_pass"].values()), report["learner_ms_per_step_pass"]
    assert report["end_to_end_steps_per_s"] / report["stock_steps_per_s"] == pytest.approx(report["ratio_vs_stock"])
    saved = json.loads((tmp_path / report["out_dir"].split("/")[-1] / "bench.json").read_text())
    assert saved["ratio_vs_stock"] == report["ratio_vs_stock"] and len(saved["runs"]["stock"]) == 1
    assert (tmp_path / report["out_dir"].split("/")[-1] / "bench.png").stat().st_size > 1000
    assert "(d)/(c) end to end vs stock" in proc.stdout and "(e) pong-train APPO" in proc.stdout


@pytest.mark.slow
def test_tiny_learner_bench_times_each_phase_of_both_learners(tmp_path):
    proc = run_cli("bench", "--learner", "--tiny", "--json", "--storage-path", str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    costs = json.loads(proc.stdout.strip().splitlines()[-1])["learner_ms_per_step_pass"]
    assert set(costs) == {"IMPALA", "APPO", "IMPALA, RLlib's learner", "APPO, RLlib's learner"}
    for run, row in costs.items():
        # Every phase ran inside the learner's real update (a phase never called would stay at 0).
        for phase in ("connector", "forward", "loss", "backward", "clip", "optimizer"):
            assert row[phase] > 0, (run, phase)
        assert row["total"] == pytest.approx(sum(v for k, v in row.items() if k != "total"))
    assert "bookkeeping" in proc.stdout and "APPO" in proc.stdout


@pytest.mark.slow
def test_learning_bench_trains_each_setting_and_reports_curves_milestones_and_memory(tmp_path):
    """Two settings, one seed, a few results each (the first 10-second result alone can hold 16,000 steps, and a
    CPU share needs two): each run goes through the real command, and the report carries its curve, milestones,
    per-process memory and CPU share."""
    proc = run_cli("bench", "--learning", "--setting", "default", "--setting", 'small-updates={"minibatch_size": 100}',
                   "--seeds", "1", "--steps", "40000", "--json", "--storage-path", str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [run["setting"] for run in summary["runs"]] == ["default", "small-updates"]
    out_dir = tmp_path / summary["out_dir"].split("/")[-1]
    report = json.loads((out_dir / "learning.json").read_text())
    for run in report["runs"]:
        assert run["steps"] >= 40000 and len(run["curve"]) >= 2, run["setting"]
        assert set(run["milestones"]) == {"-15.0", "0.0", "10.0", "18.0"}
        assert {"driver", "learner", "env_runner_1"} <= set(run["memory_mb"])
        assert {"learner", "env_runner_1"} <= set(run["cpu_share"]) and run["cpu_share"]["env_runner_1"] > 0
        assert all(entry["peak"] > 50 for entry in run["memory_mb"].values())
    assert report["runs"][1]["config"] == {"minibatch_size": 100}
    assert (out_dir / "learning.png").stat().st_size > 1000


@pytest.mark.slow
def test_learning_bench_refuses_an_unknown_setting_in_one_line(tmp_path):
    from helpers import assert_one_line_error

    proc = run_cli("bench", "--learning", "--setting", "fastest", "--storage-path", str(tmp_path), timeout=120)
    assert_one_line_error(proc, "fastest", "python-wrappers")


@pytest.mark.slow
def test_the_stock_rllib_script_runs_with_no_pong_train_code(tmp_path):
    """scripts/stock_impala.py: plain RLlib IMPALA on Pong, the README's reference for what RLlib does alone."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "stock_impala.py"
    assert "pong_train" not in script.read_text()
    proc = subprocess.run([sys.executable, str(script), "--seconds", "1"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stock RLlib IMPALA:" in proc.stdout and "agent steps/s end to end" in proc.stdout


@pytest.mark.slow
def test_the_ppo_control_script_writes_its_rows(tmp_path):
    """scripts/ppo_control.py: the PPO control of docs/learning.md, on pong-train's own sampling path."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "ppo_control.py"
    out = tmp_path / "ppo.jsonl"
    proc = subprocess.run([sys.executable, str(script), str(out), "1"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and rows[0]["steps"] >= 1024 and rows[0]["t"] >= 0


def test_the_learning_figure_script_draws_the_docs_reports(tmp_path):
    """scripts/learning_figure.py: docs/learning.md's picture of several reports, from their learning.json files."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, str(root / "scripts" / "learning_figure.py"), str(out),
                           str(root / "docs" / "learning-impala-b100.json"),
                           str(root / "docs" / "learning-appo-old-stack.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 10_000
    refused = subprocess.run([sys.executable, str(root / "scripts" / "learning_figure.py"), str(tmp_path / "x.png"),
                              str(root / "docs" / "learning-impala-b100.json"), "--only", "nothing"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no run to draw" in refused.stderr


def test_the_learning_figure_script_takes_a_plain_runs_directory(tmp_path):
    """A run of the plain `pong-train` command (the README's Time-to-18 runs) is drawn and kept as a report."""
    import subprocess
    import sys
    from pathlib import Path

    from pong_train.config import TrainConfig
    from pong_train.job import Job

    run_dir = tmp_path / "APPO_PongNoFrameskip-v4_20261205-100000"
    run_dir.mkdir()
    Job(backend="local", run="APPO", config=TrainConfig(lr=0.002)).save(run_dir / "job.json")
    rows = [{"training_iteration": i, "timesteps_total": 1000 * i, "time_total_s": 10.0 * i,
             "episode_reward_mean": None if i == 1 else -21.0 + 4 * i} for i in range(1, 11)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    root = Path(__file__).resolve().parent.parent
    saved = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(root / "scripts" / "learning_figure.py"), str(tmp_path / "c.png"),
                           f"APPO defaults={run_dir}", "--save", str(saved)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = json.loads(saved.read_text())["runs"]
    assert run["setting"] == "APPO defaults" and run["config"] == {"run": "APPO", "lr": 0.002}
    assert run["milestones"]["18.0"] == {"steps": 10_000, "time_s": 100.0} and len(run["curve"]) == 10
