"""What gets submitted: the job spec (SDK v2 command job, or the article's v1 estimator), its environment and files."""

from __future__ import annotations

import json
import shlex
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pong_train.errors import UsageError
from pong_train.job import Job
from pong_train_azureml.options import AzureOptions, is_gpu_size

RAY_PORT = 6379
# Core options that make no sense inside the job: it joins the job's own cluster and writes under ./outputs.
LOCAL_ONLY_OPTIONS = {"--backend", "--ray-address", "--storage-path", "--dashboard"}
IN_JOB_STORAGE = "outputs/runs"
# What is never uploaded, whatever .amlignore or .gitignore say (gitignore patterns, applied after them):
# credentials, version control, run outputs, virtual envs. The snapshot is filtered already, so its ignore files stay
# behind too: the SDK then uploads it whole and upload.txt lists exactly what goes.
DEFAULT_IGNORES = (
    "config.json", ".env", "*.pem", "*.key", ".azure/", ".git/", "runs/", "mlruns/", "azureml-downloads/",
    ".venv/", "venv/", "/.amlignore", "/.gitignore",
)
SNAPSHOT = "code"  # the folder, beside job.yaml, that is uploaded as the job's code
JOB_FILES = "job-files"  # in the snapshot: the files the command line names (--config-file)
START_UP_S = 30 * 60  # nodes starting and pip installing before training's own clock starts
DEFAULT_TIMEOUT_S = 24 * 3600  # without a time criterion a job still ends, and so does its bill


def project_root() -> Path:
    """The source tree that is uploaded: the checkout pong-train was installed from."""
    import pong_train

    root = Path(pong_train.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").exists() or not (root / "backends").is_dir():
        raise UsageError("the azureml backend uploads pong-train's source; install it from a clone (pip install -e .)")
    return root


def upload_files(root: Path) -> list[str]:
    """The files the SDK would upload, by its own ignore-file rules (.amlignore, else .gitignore)."""
    from azure.ai.ml._utils._asset_utils import get_ignore_file, get_upload_files_from_folder

    return sorted(rel for _, rel in get_upload_files_from_folder(root, ignore_file=get_ignore_file(root)))


def config_file(job: Job) -> Path | None:
    args = job.train_args
    return Path(args[args.index("--config-file") + 1]) if "--config-file" in args else None


def write_snapshot(job: Job, code: Path) -> None:
    """Copy what the job needs into `code`, the folder uploaded as the job's code.

    The project's files, by the SDK's ignore-file rules and then DEFAULT_IGNORES (and the run directories' folder,
    where it lies inside the project); and, under JOB_FILES, the --config-file from wherever it lies, which the
    command names there. A copy makes job.yaml self-contained: `az ml job create` uploads the same files.
    """
    from azure.ai.ml._utils._pathspec import GitWildMatchPattern

    root = project_root()
    ignores = list(DEFAULT_IGNORES)
    storage = job.storage_path.resolve()
    if root in storage.parents:
        ignores.append(f"/{storage.relative_to(root).as_posix()}/")
    patterns = [GitWildMatchPattern(ignore) for ignore in ignores]
    for rel in upload_files(root):
        if not any(pattern.match_file(rel) is not None for pattern in patterns):
            (code / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, code / rel)
    if (given := config_file(job)) is not None:
        (code / JOB_FILES).mkdir(parents=True, exist_ok=True)
        shutil.copy2(given, code / JOB_FILES / given.name)


# What the job itself imports beyond the core: MLflow logging into the job's run.
IN_JOB_REQUIREMENTS = ("azureml-mlflow", "mlflow-skinny")


def pinned_requirements() -> list[str]:
    """Everything the job runs with, each pinned to the version installed (and tested) here."""
    pins: dict[str, str] = {}
    core = [Requirement(r) for r in metadata.requires("pong-train") or []]
    pending = [r for r in core if not r.marker] + [Requirement(r) for r in IN_JOB_REQUIREMENTS]
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if name in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        pins[name] = dist.version.split("+")[0]  # a local label (torch's +cpu) would pin the CPU build
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            wanted_extras = set(req.extras) | {""}
            if sub_req.marker is None or any(sub_req.marker.evaluate({"extra": e}) for e in wanted_extras):
                pending.append(sub_req)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def conda_spec() -> dict[str, Any]:
    import platform

    python = ".".join(platform.python_version_tuple()[:2])
    return {
        "name": "pong-train",
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": pinned_requirements()}],
    }


def in_job_command(job: Job, opts: AzureOptions) -> str:
    """The command the job runs on its nodes: install the uploaded source, then the same entry point."""
    args, skip = [], False
    for arg in job.train_args:
        if skip:
            skip = False
            continue
        if arg in LOCAL_ONLY_OPTIONS:
            skip = arg != "--dashboard"
            continue
        args.append(arg)
    if "--config-file" in args:
        at = args.index("--config-file") + 1
        args[at] = f"{JOB_FILES}/{Path(args[at]).name}"
    entry = [
        "python", "-m", "pong_train", "--backend", "azureml", "--azureml-in-job", opts.launch,
        "--instance-count", str(opts.instance_count), "--storage-path", IN_JOB_STORAGE, *args,
    ]
    return "python -m pip install --quiet --no-deps --no-build-isolation . && " + shlex.join(entry)


def check_gpu(job: Job, vm_size: str, where: str) -> None:
    """A GPU asked for must exist where the job runs: on the cluster's VM size, not on this workstation."""
    if job.config.num_gpus_per_learner > 0 and not is_gpu_size(vm_size):
        raise UsageError(
            f"num_gpus_per_learner={job.config.num_gpus_per_learner:g} asks for a GPU but {where} has VM size "
            f"{vm_size}, which has none; pick a GPU size (NC, ND, NV families) with --vm-size or set \"num_gpus\": 0"
        )


def job_timeout(job: Job, opts: AzureOptions) -> int:
    """--timeout, else the stop's time_total_s plus START_UP_S, else DEFAULT_TIMEOUT_S."""
    if opts.timeout:
        return opts.timeout
    if "time_total_s" in job.stop:
        return int(job.stop["time_total_s"]) + START_UP_S
    return DEFAULT_TIMEOUT_S


def command_job(job: Job, opts: AzureOptions, vm_size: str, out_dir: Path) -> Any:
    """The SDK v2 command (what `jobs.create_or_update` takes; `._to_job()` is the job YAML's form).

    The entry point over `instance_count` nodes, Ray started by Azure ML or by MPI; the code and the environment
    are those write_dry_run wrote to `out_dir`.
    """
    from azure.ai.ml import MpiDistribution, RayDistribution, command
    from azure.ai.ml.entities import Environment

    if opts.launch == "ray":
        distribution = RayDistribution(port=RAY_PORT, include_dashboard=False)
    else:
        distribution = MpiDistribution(process_count_per_instance=1)
    node = command(
        code=str(out_dir / SNAPSHOT),
        command=in_job_command(job, opts),
        environment=Environment(image=opts.image_for(vm_size), conda_file=str(out_dir / "environment.yaml")),
        compute=opts.compute,
        instance_count=opts.instance_count,
        shm_size=opts.shm_size,
        timeout=job_timeout(job, opts),
        distribution=distribution,
        experiment_name=opts.experiment,
        display_name=opts.display_name or f"{job.run} {job.env}",
        tags={"pong_train.env": job.env, **opts.tags},
        environment_variables={"PYTHONUNBUFFERED": "1", **opts.env_vars},
    )
    return node


def compute_spec(opts: AzureOptions, vm_size: str) -> Any:
    from azure.ai.ml.entities import AmlCompute, NetworkSettings

    return AmlCompute(
        name=opts.compute,
        size=vm_size,
        min_instances=opts.min_instances,
        max_instances=opts.max_instances,
        idle_time_before_scale_down=opts.idle_seconds,
        tier="low_priority" if opts.low_priority else "dedicated",
        network_settings=NetworkSettings(vnet_name=opts.vnet, subnet=opts.subnet) if opts.vnet else None,
    )


def v1_estimator(job: Job, opts: AzureOptions, vm_size: str, code: Path) -> Any:
    """The article's ReinforcementLearningEstimator: head and worker compute targets, WorkerConfiguration."""
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # the package prints its decommission notice on import
        from azureml.contrib.train.rl import Ray, ReinforcementLearningEstimator, WorkerConfiguration
    pip_packages = pinned_requirements()
    workers = WorkerConfiguration(
        compute_target=opts.compute, node_count=max(1, opts.instance_count - 1), use_gpu=False,
        pip_packages=pip_packages,
    )
    script_params: dict[str, Any] = {}
    args = iter(shlex.split(in_job_command(job, opts).split(" && ", 1)[1])[3:])
    for arg in args:
        script_params[arg] = "" if arg in ("--debug",) else next(args, "")
    return ReinforcementLearningEstimator(
        source_directory=str(code),
        entry_script="pong_train/__main__.py",
        script_params=script_params,
        compute_target=opts.compute,
        pip_packages=pip_packages,
        use_gpu=is_gpu_size(vm_size),
        rl_framework=Ray(version="0.8.3"),
        worker_configuration=workers,
        cluster_coordination_timeout_seconds=3600,
        max_run_duration_seconds=job_timeout(job, opts),
        shm_size=opts.shm_size,
    )


V1_NOTICE = ("Azure ML's reinforcement-learning estimator service was retired in June 2022 and accepts only Ray "
             "0.8.0 and 0.8.3; this spec is for reference and will not train with Ray 2.60")


def write_dry_run(job: Job, opts: AzureOptions, vm_size: str, out_dir: Path) -> Path:
    """Write the code snapshot, its upload list, the environment, compute and job specs; returns the job spec's path.

    Nothing written holds a local absolute path: job.yaml names its code relative to itself.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_snapshot(job, out_dir / SNAPSHOT)
    (out_dir / "upload.txt").write_text("\n".join(upload_files(out_dir / SNAPSHOT)) + "\n")
    (out_dir / "environment.yaml").write_text(yaml.safe_dump(conda_spec(), sort_keys=False))
    compute_spec(opts, vm_size).dump(out_dir / "compute.yaml")
    if opts.sdk == "v1":
        from azureml.core._serialization_utils import _serialize_to_dict

        spec = out_dir / "estimator.json"
        estimator = v1_estimator(job, opts, vm_size, out_dir / SNAPSHOT)
        spec.write_text(json.dumps({"notice": V1_NOTICE, "rl_config": _serialize_to_dict(estimator.rl_config)},
                                   indent=2, default=str))
        return spec
    from azure.ai.ml._utils.utils import dump_yaml_to_file

    spec = out_dir / "job.yaml"
    # The SDK always writes the code's absolute path; the spec's own folder is where load_job and az look.
    dump_yaml_to_file(spec, {**command_job(job, opts, vm_size, out_dir)._to_job()._to_dict(), "code": SNAPSHOT})
    return spec
