"""Faults: a killed driver resumed from its checkpoint, Ctrl-C/SIGTERM, a killed env runner, failing loggers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_cli, run_dirs, wait_for_a_saved_checkpoint
from pong_train.config import PRESETS
from pong_train.loggers import GuardedLogger, JsonlLogger, read_metrics
from pong_train.metrics import reached

pytestmark = pytest.mark.timeout(60)  # the slow tests set their own

SMOKE = ["--preset", "smoke", "--config", '{"num_gpus": 0, "num_workers": 1}']


def start(storage: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pong_train", *SMOKE, "--storage-path", str(storage), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rows(storage: Path, count: int, proc: subprocess.Popen, timeout_s: float = 240) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        dirs = run_dirs(storage)
        if dirs and (dirs[0] / "metrics.jsonl").exists() and len(read_metrics(dirs[0] / "metrics.jsonl")) >= count:
            return dirs[0]
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"fewer than {count} results in {timeout_s} s")


def iterations(run_dir: Path) -> list[int]:
    return [row["training_iteration"] for row in read_metrics(run_dir / "metrics.jsonl")]


# Far enough that the run is killed before it meets them: 5 results and Tune's saved state take about
# 10-20 s, and 8 Pong episodes on one env runner about 35 s.
ROOMY_STOP = {"episodes_total": 8, "time_total_s": 200}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_driver_resumes_with_no_gap_and_no_repeat(storage):
    started = time.time()
    proc = start(storage, "--checkpoint-freq", "1", "--stop", json.dumps(ROOMY_STOP))
    run_dir = wait_for_rows(storage, 5, proc)
    wait_for_a_saved_checkpoint(storage, started, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = iterations(run_dir)
    assert before[:5] == [1, 2, 3, 4, 5]
    assert not any(reached(ROOMY_STOP, row) for row in read_metrics(run_dir / "metrics.jsonl")), \
        "the run met its stop criteria before it was killed: ROOMY_STOP needs more room"
    resumed = run_cli("--resume", str(run_dir), timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["training_iteration"] for row in rows] == list(range(1, len(rows) + 1))
    # The resumed run trained (one console line per result) from a checkpoint, not from scratch, and
    # its results are the tail of metrics.jsonl: it took over where the killed run's checkpoint was.
    taken = [int(n) for n in re.findall(r"^iter\s+(\d+)\s", resumed.stdout, flags=re.M)]
    assert taken, "the resumed run reported no result"
    assert 1 < taken[0] <= before[-1] + 1, (taken, before)
    assert [row["training_iteration"] for row in rows][-len(taken):] == taken
    # The run stopped at its first result that met its stop criteria, not before, not after.
    assert reached(ROOMY_STOP, rows[-1])
    assert not any(reached(ROOMY_STOP, row) for row in rows[:-1])
    steps = [row["timesteps_total"] for row in rows]
    assert steps == sorted(steps)  # env steps continue from the checkpoint, they do not restart
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    again = run_cli("--resume", str(run_dir))
    assert again.returncode == 2 and "nothing to resume" in again.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_killed_after_its_last_checkpoint_resumes_to_its_end_without_training(storage):
    finished = run_cli(*SMOKE, "--storage-path", str(storage), timeout=400)
    assert finished.returncode == 0, finished.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert reached(PRESETS["smoke"]["stop"], rows[-1])
    # What a SIGKILL between the last checkpoint and the end leaves: run.json still says running.
    record = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "status": "running"}))
    resumed = run_cli("--resume", str(run_dir), timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(iteration {rows[-1]['training_iteration']}) already met the stop criteria" in resumed.stderr
    assert not re.search(r"^iter\s", resumed.stdout, flags=re.M), resumed.stdout
    assert read_metrics(run_dir / "metrics.jsonl") == rows
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_prints_the_resume_command(storage, signum, code):
    proc = start(storage, "--stop", '{"training_iteration": 50}')
    run_dir = wait_for_rows(storage, 2, proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert f"resume with: pong-train --resume {run_dir}" in stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted"
    last = iterations(run_dir)[-1]
    [trial] = [p for p in run_dir.iterdir() if p.is_dir()]
    checkpoints = sorted(trial.glob("checkpoint_*"))
    assert checkpoints, "no checkpoint saved on the signal"
    state = json.loads((trial / "result.json").read_text().splitlines()[-1])
    assert state["training_iteration"] == last


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_env_runner_is_replaced_and_training_goes_on(storage):
    proc = start(storage, "--stop", '{"training_iteration": 12}')
    run_dir = wait_for_rows(storage, 2, proc)
    placement = json.loads((run_dir / "placement.json").read_text())
    os.kill(placement["env_runners"][0]["pid"], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["training_iteration"] for row in rows] == list(range(1, 13))
    assert max(row.get("fault_tolerance/num_remote_worker_restarts", 0) for row in rows) >= 1
    assert rows[-1]["timesteps_total"] > rows[1]["timesteps_total"]


class FlakyLogger:
    """Fails `failures` times, then takes results."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.rows: list[int] = []
        self.closed = False

    def log_result(self, row):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("tracking server unreachable")
        self.rows.append(row["training_iteration"])

    def close(self):
        self.closed = True


def test_guarded_logger_buffers_and_delivers_in_order_after_recovery(capsys):
    now = [0.0]
    flaky = FlakyLogger(failures=3)
    guarded = GuardedLogger(flaky, clock=lambda: now[0])
    for iteration in range(1, 11):
        guarded.log_result({"training_iteration": iteration})
        now[0] += 1.5
    guarded.close()
    assert flaky.rows == list(range(1, 11)) and flaky.closed
    err = capsys.readouterr().err
    assert err.count("ConnectionError") == 1  # reported once per kind
    assert guarded.failures["ConnectionError"] == 3


def test_guarded_logger_backs_off_instead_of_retrying_every_result():
    now = [0.0]
    flaky = FlakyLogger(failures=1000)
    guarded = GuardedLogger(flaky, clock=lambda: now[0])
    for iteration in range(100):
        guarded.log_result({"training_iteration": iteration})
        now[0] += 1.0
    assert sum(guarded.failures.values()) < 12  # 1 s, 2 s, 4 s ... 60 s apart, not 100 tries
    assert len(guarded.pending) == 100


def test_metrics_jsonl_skips_a_torn_line_and_drops_rows_past_the_resumed_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"training_iteration": i}) + "\n" for i in range(1, 8)) + '{"training_it')
    assert [r["training_iteration"] for r in read_metrics(path)] == list(range(1, 8))
    logger = JsonlLogger(path)  # the resumed run restarts after the checkpoint at iteration 5
    for iteration in (6, 7, 8):
        logger.log_result({"training_iteration": iteration})
    logger.close()
    assert [r["training_iteration"] for r in read_metrics(path)] == list(range(1, 9))
    assert path.read_text().endswith("}\n")


def test_runs_with_the_same_name_never_share_a_directory(tmp_path):
    from pong_train.config import TrainConfig
    from pong_train.job import Job
    from pong_train.rundir import make_run_dir

    job = Job(backend="local", run="IMPALA", env="PongNoFrameskip-v4", config=TrainConfig(), stop={},
              storage_path=tmp_path, name="same")
    dirs = {make_run_dir(job) for _ in range(5)}  # within one second: same timestamp
    assert len(dirs) == 5 and all(d.name.startswith("same_") for d in dirs)


class DownLogger:
    """A plugin's logger whose sink never comes back."""

    def log_result(self, row):
        raise ConnectionError("sink down")

    def close(self):
        pass


def test_a_logger_that_never_recovers_makes_the_run_exit_3_naming_it(tmp_path, capsys):
    """The end of a run, without Ray: the monitor's loggers, then `finish` turns lost results into exit 3."""
    from pong_train.errors import EXIT_LOST_RESULTS
    from pong_train.job import Invocation, Job, Run
    from pong_train.monitor import RunMonitor, close_loggers
    from pong_train.training import finish

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run = Run(job=Job(backend="elsewhere", storage_path=tmp_path), run_dir=run_dir, invocation=Invocation(quiet=True))
    monitor = RunMonitor(run, lambda each: [("plugin observer-dist 1.2 (observer)", DownLogger())])
    for iteration in (1, 2, 3):
        monitor.on_result("trial", {"training_iteration": iteration, "time_total_s": float(iteration)})
    lost = close_loggers(run_dir)
    assert lost == {"DownLogger (from plugin observer-dist 1.2 (observer))": 3}
    assert [row["training_iteration"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    capsys.readouterr()
    assert finish(run, [], lost) == EXIT_LOST_RESULTS == 3
    assert json.loads((run_dir / "run.json").read_text())["status"] == "lost-results"
    err = capsys.readouterr().err
    assert "results were lost: DownLogger (from plugin observer-dist 1.2 (observer)) lost 3" in err, err
    # Nothing lost: exit 0, "completed".
    monitor = RunMonitor(run, lambda each: [])
    monitor.on_result("trial", {"training_iteration": 4, "time_total_s": 4.0})
    assert close_loggers(run_dir) == {}
    assert finish(run, [], {}) == 0
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
