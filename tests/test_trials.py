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


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_grid_and_samples_train_as_trials_each_in_its_own_folder(storage):
    """The issue's first two checks: a grid of two lr values, then two samples, each trial in its own folder with
    its own metrics.jsonl and settings, and trials.json naming them."""
    import json

    from helpers import run_cli, run_dirs

    proc = run_cli("--preset", "smoke", "--config", '{"lr": {"grid_search": [0.0005, 0.001]}}', "--storage-path",
                   str(storage), "-q", timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    trials = json.loads((run_dir / "trials.json").read_text())
    assert [(t["trial"], t["settings"]["lr"], t["status"]) for t in trials] == [
        ("trial_0", 0.0005, "completed"), ("trial_1", 0.001, "completed")]
    for trial in trials:
        folder = run_dir / trial["trial"]
        assert len((folder / "metrics.jsonl").read_text().splitlines()) >= 2
        assert json.loads((folder / "params.json").read_text())["lr"] == trial["settings"]["lr"]
    assert json.loads((run_dir / "job.json").read_text())["sweep"]["spaces"] == {"lr": {"grid_search": [0.0005, 0.001]}}
