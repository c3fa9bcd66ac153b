"""The config layer: the article's keys translated one by one into the real IMPALAConfig, precedence, rejects."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import pytest

from helpers import options_model
from pong_train import config as cfg, hookimpl, user_config
from pong_train.cli import main, with_plugins
from pong_train.errors import PluginError, UsageError
from pong_train.job import Invocation, Job
from pong_train.plugins import get_plugin_manager
from pong_train.rllib_config import algorithm_config

# Fast: no Ray, no training (pytest-timeout; the suite's default is in pyproject.toml).
pytestmark = pytest.mark.timeout(60)

ARTICLE_SCRIPT_CONFIG = {
    "num_gpus": 1,
    "num_workers": 13,
    "sample_batch_size": 50,
    "train_batch_size": 1000,
    "num_sgd_iter": 2,
    "num_data_loader_buffers": 2,
    "model": {"dim": 42},
}


def rllib_config_for(**fields):
    """The IMPALAConfig training gets: `num_env_runners` resolved (one when the config leaves it to the cluster)."""
    config = cfg.TrainConfig(**fields)
    config = config.model_copy(update={"num_env_runners": 1 if config.num_env_runners is None else config.num_env_runners})
    return algorithm_config(config, "PongNoFrameskip-v4")


@pytest.mark.parametrize(
    "old_key, value, new_key, impala_attr",
    [
        ("num_workers", 13, "num_env_runners", "num_env_runners"),
        ("num_envs_per_worker", 4, "num_envs_per_env_runner", "num_envs_per_env_runner"),
        ("num_cpus_per_worker", 2, "num_cpus_per_env_runner", "num_cpus_per_env_runner"),
        ("sample_batch_size", 50, "rollout_fragment_length", "rollout_fragment_length"),
        ("train_batch_size", 1000, "train_batch_size_per_learner", "train_batch_size_per_learner"),
        ("num_sgd_iter", 2, "num_epochs", "num_epochs"),
        ("num_gpus", 1, "num_gpus_per_learner", "num_gpus_per_learner"),
        ("num_data_loader_buffers", 2, "num_gpu_loader_threads", "num_gpu_loader_threads"),
        ("min_iter_time_s", 3, "min_time_s_per_iteration", "min_time_s_per_iteration"),
    ],
)
def test_each_legacy_key_reaches_the_algorithm_config(old_key, value, new_key, impala_attr):
    notes: list[str] = []
    translated = user_config.translate({old_key: value}, "--config", notes)
    assert translated == {new_key: value}
    assert len(notes) == 1 and old_key in notes[0] and new_key in notes[0]
    train_config = cfg.build_config([translated])
    algo = rllib_config_for(**train_config.model_dump())
    assert getattr(algo, impala_attr) == value


def test_model_dim_reaches_the_env_and_picks_the_42_pixel_network():
    translated = user_config.translate({"model": {"dim": 42}}, "--config", [])
    algo = rllib_config_for(**translated)
    assert algo.env_config["dim"] == 42
    assert algo.rl_module_spec.model_config["conv_filters"] == [
        [16, 4, 2, "same"], [32, 4, 2, "same"], [256, 11, 1, "valid"]]


def test_default_pipeline_is_the_vector_env_and_the_wrappers_stay_available():
    fast = rllib_config_for()
    assert fast.env == "pong_train_ale_vector" and fast.gym_env_vectorize_mode == "vector_entry_point"
    assert fast.rl_module_spec.module_class.__name__ == "Uint8FramesModule"
    wrappers = rllib_config_for(vector_env=False)
    assert wrappers.env == "pong_train_atari"


def test_the_article_script_config_translates_completely():
    notes: list[str] = []
    translated = user_config.translate(ARTICLE_SCRIPT_CONFIG, "config", notes)
    assert len(notes) == len(ARTICLE_SCRIPT_CONFIG)
    article_preset = user_config.translate(cfg.PRESETS["article"]["config"], "preset article", [])
    # The article left the learning rate at RLlib 0.8.3's 0.0005; the preset pins it, as pong-train's is 0.001.
    assert {**translated, "lr": 0.0005} == article_preset


@pytest.mark.parametrize("key", ["callbacks", "sample_async", "replay_proportion", "env", "use_pytorch"])
def test_keys_with_no_meaning_today_are_rejected_with_a_reason(key):
    with pytest.raises(UsageError, match=f"'{key}' has no meaning in Ray 2.60: .+"):
        user_config.translate({key: 1}, "--config", [])


@pytest.mark.parametrize("typo, suggestion", [("num_workrs", "num_workers"), ("num_env_runner", "num_env_runners"),
                                              ("entropy_coef", "entropy_coeff")])
def test_unknown_keys_name_the_closest_valid_key(typo, suggestion):
    with pytest.raises(UsageError, match=f"did you mean '{suggestion}'"):
        user_config.translate({typo: 1}, "--config", [])


def test_article_quoted_json_is_accepted_verbatim():
    # The article's script_params wrap the JSON in an extra pair of single quotes.
    assert user_config.parse_json_arg("'{\"num_gpus\": 1, \"num_workers\": 13}'", "--config") == {"num_gpus": 1, "num_workers": 13}
    assert user_config.parse_json_arg('{"episode_reward_mean": 18, "time_total_s": 3600}', "--stop") == {
        "episode_reward_mean": 18, "time_total_s": 3600}


class Capture:
    """Stands in for the backend: keeps the Job the command line resolved, and its Invocation, instead of launching it."""

    def __init__(self) -> None:
        self.launched: list[tuple[Job, Invocation]] = []

    @hookimpl(tryfirst=True)
    def pong_train_launch(self, job, invocation):
        self.launched.append((job, invocation))
        return 0


def invoke(args: list[str]) -> tuple[Job, Invocation]:
    """Run the real command line (`pong_train.cli.main`); the Job it would have launched, and how."""
    capture = Capture()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args, plugin_manager=get_plugin_manager(extra_plugins=[capture]))
    assert code == 0, err.getvalue()
    [launched] = capture.launched
    return launched


def resolve(args: list[str]) -> Job:
    return invoke(args)[0]


def test_precedence_command_line_over_file_over_preset_over_defaults(tmp_path):
    config_file = tmp_path / "train.yaml"
    config_file.write_text("num_workers: 3\nlr: 0.001\nnum_envs_per_env_runner: 8\nstop:\n  time_total_s: 60\n")
    job = resolve(["--preset", "smoke", "--config-file", str(config_file), "--config", '{"lr": 0.002}'])
    assert job.config.lr == 0.002  # command line beats the file
    assert job.config.num_env_runners == 3  # the file beats the preset (smoke sets 1)
    assert job.config.num_envs_per_env_runner == 8
    assert job.config.rollout_fragment_length == 50  # preset value, untouched
    assert job.config.gamma == cfg.TrainConfig().gamma  # default
    assert job.stop == {"time_total_s": 60.0}  # the file's stop replaces the preset's
    assert resolve(["--preset", "smoke", "--stop", '{"training_iteration": 3}']).stop == {"training_iteration": 3.0}
    assert resolve([]).stop == cfg.DEFAULT_STOP


def test_json_config_file_takes_the_same_keys(tmp_path):
    config_file = tmp_path / "train.json"
    config_file.write_text(json.dumps(ARTICLE_SCRIPT_CONFIG | {"num_gpus": 0}))
    job, invocation = invoke(["--config-file", str(config_file)])
    assert job.config.num_env_runners == 13 and job.config.num_epochs == 2 and job.config.dim == 42
    assert len(invocation.notes) == len(ARTICLE_SCRIPT_CONFIG)


def test_the_job_saved_to_job_json_is_the_job_the_command_line_built(tmp_path):
    args = ["--run", "IMPALA", "--env", "ALE/Pong-v5", "--config", '{"num_gpus": 0, "num_workers": 2}',
            "--stop", '{"time_total_s": 5}', "--name", "kept", "--checkpoint-freq", "7", "--debug"]
    job, invocation = invoke(args)
    assert (job.env, job.name, job.checkpoint_freq, invocation.debug) == ("ALE/Pong-v5", "kept", 7, True)
    assert job.config.num_gpus_per_learner == 0 and job.config.num_env_runners == 2
    assert job.stop == {"time_total_s": 5.0} and len(invocation.notes) == 2
    assert invocation.plugin_manager is not None
    saved = job.save(tmp_path / "job.json")
    # How this command ran it (--debug, the plugin manager, the notes) is never saved.
    assert set(json.loads(saved.read_text())) & {field.name for field in dataclasses.fields(Invocation)} == set()
    as_json = job.model_dump(mode="json")
    loaded = Job.load(saved)
    assert loaded.model_dump(mode="json") == as_json
    assert loaded.config == job.config and loaded.stop == job.stop and loaded.storage_path == job.storage_path
    # What a backend does on the machine that runs the job: `--job FILE` launches that same job, as this command says.
    again, how = invoke(["--job", str(saved), "--quiet"])
    assert again.model_dump(mode="json") == as_json and (how.quiet, how.debug, how.notes) == (True, False, ())


def test_the_loaded_job_equals_the_built_one_exactly(tmp_path):
    job = resolve(["--preset", "smoke"])
    assert Job.load(job.save(tmp_path / "job.json")) == job


def test_a_job_file_that_is_not_a_job_is_bad_input(tmp_path):
    not_a_job = tmp_path / "job.json"
    not_a_job.write_text('{"backend": "local", "lr": 1}')
    with pytest.raises(UsageError, match="lr: not a field of a pong-train job"):
        Job.load(not_a_job)
    with pytest.raises(UsageError, match="cannot read the job file"):
        Job.load(tmp_path / "missing.json")


def test_fast_gpu_preset_asks_for_a_gpu_learner():
    job = resolve(["--preset", "fast-gpu"])
    assert job.config.num_gpus_per_learner == 1 and job.config.num_envs_per_env_runner == 64
    assert job.stop == {"episode_reward_mean": 18.0}


def test_article_preset_is_the_article_translated():
    job = resolve(["--preset", "article"])
    assert job.config.num_gpus_per_learner == 1 and job.config.num_env_runners == 13
    assert job.config.train_batch_size_per_learner == 1000 and job.config.num_epochs == 2
    assert job.stop == {"episode_reward_mean": 18.0, "time_total_s": 3600.0}


def test_cli_rejects_plugin_option_clashing_with_core(capsys):
    class Clash:
        @hookimpl
        def pong_train_cli_options(self):
            return [options_model("--env", "")]

    with pytest.raises(PluginError, match=r"plugin Clash adds option --env, which pong-train already has"):
        with_plugins(get_plugin_manager(extra_plugins=[Clash()]))
    assert main(["--preset", "smoke"], plugin_manager=get_plugin_manager(extra_plugins=[Clash()])) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["pong-train: error: plugin Clash adds option --env, which pong-train already has"]


def test_with_plugins_leaves_the_core_command_as_it_was():
    from pong_train.cli.train import cli

    before = ([p.name for p in cli.params], sorted(cli.commands))

    class Extra:
        @hookimpl
        def pong_train_cli_options(self):
            return [options_model("--extra-flag", False, "An observer's flag.")]

    group = with_plugins(get_plugin_manager(extra_plugins=[Extra()]))
    assert "--extra-flag" in [opt for p in group.params for opt in p.opts]
    assert ([p.name for p in cli.params], sorted(cli.commands)) == before


def test_run_appo_builds_rllibs_appo_with_its_settings(tmp_path):
    from ray.rllib.algorithms.appo import APPOConfig

    job = resolve(["--run", "appo", "--config", '{"num_gpus": 0, "clip_param": 0.3}'])
    assert job.run == "APPO" and job.config.clip_param == 0.3
    assert job.config.circular_buffer_iterations_per_batch == cfg.APPO_DEFAULTS["circular_buffer_iterations_per_batch"]
    algo = algorithm_config(job.config.model_copy(update={"num_env_runners": 1}), job.env, job.run)
    assert isinstance(algo, APPOConfig) and algo.clip_param == 0.3
    assert algo.learner_class.__name__ == "BootstrappingAPPOLearner"
    assert algo.rl_module_spec.module_class.__name__ == "Uint8FramesAPPOModule"
    assert Job.load(job.save(tmp_path / "job.json")) == job


def test_an_appo_setting_under_impala_is_refused_naming_its_algorithm(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--config", '{"num_gpus": 0, "clip_param": 0.3}'], plugin_manager=get_plugin_manager())
    assert code == 2
    assert err.getvalue().strip().count("\n") == 0
    assert "'clip_param' is an APPO setting and means nothing to IMPALA" in err.getvalue()
    saved = tmp_path / "job.json"
    saved.write_text(json.dumps({"backend": "local", "run": "IMPALA", "config": {"clip_param": 0.3}}))
    with pytest.raises(UsageError, match="is an APPO setting"):
        Job.load(saved)


@pytest.mark.parametrize("cpus, env_runners, threads", [(2, 1, 2), (16, 15, 1), (4, 3, 1), (8, 1, 2), (1, 1, 1)])
def test_unset_emulator_threads_are_the_cpus_per_env_runner_at_most_2(cpus, env_runners, threads):
    from pong_train.cluster import emulator_threads

    assert emulator_threads(cpus, env_runners) == threads


def test_the_emulator_threads_reach_the_vector_env():
    config = algorithm_config(cfg.TrainConfig(num_env_runners=1, num_emulator_threads=2), "PongNoFrameskip-v4")
    assert config.env_config["emulator_threads"] == 2
    assert algorithm_config(cfg.TrainConfig(num_env_runners=1), "PongNoFrameskip-v4").env_config[
        "emulator_threads"] == 1  # unresolved (no cluster): one thread, as before
