"""What gets submitted: the job spec (SDK v2 command job, or the article's v1 estimator), its environment and files."""

from __future__ import annotations

import json
import math
import os
import secrets
import shlex
import shutil
from pathlib import Path
from typing import Any

import yaml

from pong_train.config import check_gpus
from pong_train.errors import UsageError
from pong_train.job import JOB_FILE, Invocation, Job
from pong_train_azureml.environment import conda_spec, pinned_requirements
from pong_train_azureml.options import PLUGIN, RAY_PORT, RUNS_FOLDER_FLAG, AzureOptions, is_gpu_size, job_timeout

# The job's named output that holds the run directory: a datastore folder that outlives the job, so a stopped job
# can be resumed (resume.py); Azure ML puts the folder's mount point in place of the binding, in the command only.
RUNS_OUTPUT = "runs"
IN_JOB_STORAGE = "${{outputs.%s}}" % RUNS_OUTPUT
RUNS_PATH = "azureml://datastores/{datastore}/paths/pong-train/{run}/"
V1_STORAGE = "outputs/runs"  # the v1 estimator has no named outputs; its outputs/ folder is uploaded at the end
INSTALL_SOURCE = "python -m pip install --quiet --no-deps --no-build-isolation ."  # in the job, from its code
# What is never uploaded, whatever .amlignore or .gitignore say (gitignore patterns, applied after them):
# credentials, version control, run outputs, virtual envs. The snapshot is filtered already, so its ignore files stay
# behind too: the SDK then uploads it whole and upload.txt lists exactly what goes.
DEFAULT_IGNORES = (
    "config.json", ".env", "*.pem", "*.key", ".azure/", ".git/", "runs/", "mlruns/", "mlflow.db", "azureml-downloads/",
    ".venv/", "venv/", "/.amlignore", "/.gitignore",
)
SNAPSHOT = "code"  # the folder, beside job.yaml, that is uploaded as the job's code
NODE_JOB = f"job-files/{JOB_FILE}"  # in the snapshot: the job its nodes run, `python -m pong_train --job NODE_JOB`
# Options only the submitting machine acts on (where the workspace is, whether to wait): the nodes' job drops them.
SUBMIT_ONLY = ("dry_run", "no_wait", "workspace_config", "subscription", "resource_group", "workspace")


def project_root() -> Path:
    """The source tree that is uploaded: the checkout pong-train was installed from."""
    import pong_train

    root = Path(pong_train.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").exists() or not (root / "backends").is_dir():
        raise UsageError("the azureml backend uploads pong-train's source; install it from a clone (pip install -e .)")
    return root


def upload_files(root: Path, ignores: tuple[str, ...] = ()) -> list[str]:
    """The files under `root` that are uploaded, relative and sorted: all but what the SDK's ignore file (.amlignore,
    else .gitignore, at the root) and then `ignores` leave out, by git's own pattern rules."""
    import pathspec

    ignore_file = next((root / name for name in (".amlignore", ".gitignore") if (root / name).is_file()), None)
    user = pathspec.GitIgnoreSpec.from_lines(ignore_file.read_text().splitlines() if ignore_file else [])
    always = pathspec.GitIgnoreSpec.from_lines(ignores)

    def ignored(rel: str) -> bool:
        return user.match_file(rel) or always.match_file(rel)

    found = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder).relative_to(root)
        subfolders[:] = [name for name in subfolders if not ignored(f"{(here / name).as_posix()}/")]
        found += [rel for rel in ((here / name).as_posix() for name in files) if not ignored(rel)]
    return sorted(found)


def node_job(job: Job, opts: AzureOptions) -> Job:
    """The job as the nodes run it: the same resolved settings (a --config-file's included), launched in the job.

    It writes under the job's `runs` output (v1: its outputs/ folder); the binding stands in for the mount point,
    which the command names (in_job_command). How the nodes run it (their Ray cluster, --debug) is their own.
    """
    launched = opts.model_copy(update={"in_job": opts.launch}).model_dump(mode="json", exclude=set(SUBMIT_ONLY))
    storage = V1_STORAGE if opts.sdk == "v1" else IN_JOB_STORAGE
    return job.model_copy(update={"storage_path": Path(storage), "options": {**job.options, PLUGIN: launched}})


def write_snapshot(job: Job, opts: AzureOptions, code: Path) -> None:
    """Copy what the job needs into `code`, the folder uploaded as the job's code.

    The project's files, by the SDK's ignore-file rules and then DEFAULT_IGNORES (and the run directories' folder,
    where it lies inside the project); and NODE_JOB, the job its command runs. A copy makes job.yaml self-contained:
    `az ml job create` uploads the same files.
    """
    root = project_root()
    ignores = DEFAULT_IGNORES
    storage = job.storage_path.resolve()
    if root in storage.parents:
        ignores += (f"/{storage.relative_to(root).as_posix()}/",)
    for rel in upload_files(root, ignores):
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, code / rel)
    (code / NODE_JOB).parent.mkdir(parents=True, exist_ok=True)
    node_job(job, opts).save(code / NODE_JOB)


def datastore_folder(run_dir: Path) -> str:
    """The job's own folder on the datastore: the run directory's name and a random suffix, so two submissions never
    share one (run directory names are unique on one machine only, to the second)."""
    return f"{run_dir.name}-{secrets.token_hex(4)}"


def runs_output(path: str) -> Any:
    """The datastore folder at `path`, mounted read-write, that the job keeps its run directory in."""
    from azure.ai.ml import Output

    return Output(type="uri_folder", mode="rw_mount", path=path)


def in_job_command(invocation: Invocation) -> str:
    """The command the job runs on its nodes: install the uploaded source, then the job file it carries, --quiet or
    --debug where the submitting command had them.

    Azure ML resolves the `runs` output's binding in the command only, not in uploaded files: the command hands its
    mount point over.
    """
    flags = [flag for flag, wanted in (("--quiet", invocation.quiet), ("--debug", invocation.debug)) if wanted]
    entry = ["python", "-m", "pong_train", "--job", NODE_JOB, RUNS_FOLDER_FLAG, IN_JOB_STORAGE, *flags]
    return f"{INSTALL_SOURCE} && {shlex.join(entry)}"


OFFLINE_CHECKS = ("--dry-run works offline: the names and the GPU were checked here; whether the region offers the VM "
                  "size, its GPUs' maker and vCPUs, and the cluster's node limit are checked against the workspace "
                  "when the job is submitted")


def check_gpu(job: Job, vm_size: str, compute: str) -> None:
    """A GPU asked for must exist where the job runs: on the cluster's VM size, not on this workstation."""
    # A size's name tells whether it has GPUs, not how many: the N-series pass, every other size has none.
    available = math.inf if is_gpu_size(vm_size) else 0
    check_gpus(job.config, available, f"compute {compute} (VM size {vm_size}; GPU sizes: the NC, ND, NV families, "
                                      "--vm-size)")


def command_job(job: Job, opts: AzureOptions, invocation: Invocation, vm_size: str, out_dir: Path) -> Any:
    """The SDK v2 command: what `jobs.create_or_update` takes (it refuses a CommandJob); its `_to_job()` is the
    CommandJob whose `dump` writes job.yaml.

    The entry point over `instance_count` nodes, Ray started by Azure ML or by MPI; the code and the environment
    are those write_dry_run wrote to `out_dir`, the run directory under pong-train/<the local run directory's name>
    in the datastore.
    """
    from azure.ai.ml import MpiDistribution, RayDistribution, command
    from azure.ai.ml.entities import Environment

    if opts.launch == "ray":
        distribution = RayDistribution(port=RAY_PORT, include_dashboard=False)
    else:
        distribution = MpiDistribution(process_count_per_instance=1)
    return command(
        code=str(out_dir / SNAPSHOT),
        command=in_job_command(invocation),
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
        outputs={RUNS_OUTPUT: runs_output(RUNS_PATH.format(datastore=opts.datastore,
                                                            run=datastore_folder(out_dir.parent)))},
    )


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
        compute_target=opts.worker_compute, node_count=max(1, opts.instance_count - 1), use_gpu=False,
        pip_packages=pip_packages,
    )
    return ReinforcementLearningEstimator(
        source_directory=str(code),
        entry_script="pong_train/__main__.py",
        script_params={"--job": NODE_JOB},
        compute_target=opts.head_compute,
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


def write_dry_run(job: Job, opts: AzureOptions, invocation: Invocation, vm_size: str,
                  out_dir: Path) -> tuple[Path, Any]:
    """Write the code snapshot, its upload list, the environment, compute and job specs; returns the job spec's path
    and (SDK v2) the command job it holds, which is what gets submitted.

    Nothing written holds a local absolute path: job.yaml names its code relative to itself.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_snapshot(job, opts, out_dir / SNAPSHOT)
    (out_dir / "upload.txt").write_text("\n".join(upload_files(out_dir / SNAPSHOT)) + "\n")
    (out_dir / "environment.yaml").write_text(yaml.safe_dump(conda_spec(vm_size), sort_keys=False))
    compute_spec(opts, vm_size).dump(out_dir / "compute.yaml")
    if opts.sdk == "v1":
        from azureml.core._serialization_utils import _serialize_to_dict

        spec = out_dir / "estimator.json"
        estimator = v1_estimator(job, opts, vm_size, out_dir / SNAPSHOT)
        spec.write_text(json.dumps({"notice": V1_NOTICE, "rl_config": _serialize_to_dict(estimator.rl_config)},
                                   indent=2, default=str))
        return spec, None
    spec = out_dir / "job.yaml"
    command = command_job(job, opts, invocation, vm_size, out_dir)
    command._to_job().dump(spec)
    # The SDK always writes the code's absolute path; the spec's own folder is where load_job and az look.
    spec.write_text(yaml.safe_dump({**yaml.safe_load(spec.read_text()), "code": SNAPSHOT}, sort_keys=False))
    return spec, command
