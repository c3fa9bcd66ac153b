"""The azureml backend's options, each declared once: a field of AzureOptions with its flag, default and help; the
core makes the command line's options from the model and keeps their values in the job under the plugin's name."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import click
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from pong_train.job import Job
from pong_train.plugin_options import Flag, validated

PLUGIN = "azureml"
"""The plugin's name (its entry point's): the job keeps its options as job.options[PLUGIN]."""
DEFAULT_EXPERIMENT = "rllib-pong-multi-node"
GPU_VM_SIZE = "Standard_NC4as_T4_v3"
CPU_VM_SIZE = "Standard_D4s_v3"
# The image's CUDA and torch's wheel build go together. Torch 2.13 ships CUDA 12.6, 13.0 and 13.2 wheels, none for
# 11.8; the 12.6 build is the one that still runs on Volta (NCv3's V100) as well as T4, A100 and H100.
GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi5.0-cuda12.6-ubuntu24.04:latest"
GPU_TORCH_BUILD = "cu126"
CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04:latest"  # the GPU image's generation, without CUDA
CPU_TORCH_BUILD = "cpu"

VM_SIZE = re.compile(r"^(standard|basic)_[a-z]+\d+[a-z0-9_-]*$", re.IGNORECASE)
# N-series sizes carry GPUs: NC (compute), ND (deep learning), NV (visualisation), NG.
GPU_FAMILY = re.compile(r"^(standard_)?n[cdvg]", re.IGNORECASE)
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CONNECTION_STRING|SAS|CREDENTIAL", re.IGNORECASE)
SHM_SIZE = re.compile(r"^(\d+)([kmg])$", re.IGNORECASE)
# The service's naming rules, checked before anything is contacted: a name it refuses fails only after sign-in.
NAME_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "compute": (re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,14}[A-Za-z0-9]$"),
                "Azure ML compute names are 2-16 letters, digits or hyphens, starting with a letter and ending with "
                "a letter or digit"),
    "experiment": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,35}$"),
                   "Azure ML experiment names are 3-36 letters, digits, underscores or hyphens, starting with a "
                   "letter or digit"),
    "datastore": (re.compile(r"^[A-Za-z0-9_]{1,255}$"), "Azure ML datastore names are letters, digits and underscores"),
    "display_name": (re.compile(r"^[^\x00-\x1f\x7f]{1,256}$"),
                     "Azure ML display names are 1-256 characters, with no control characters (no line breaks)"),
}
RAY_PORT = 6379  # the job's Ray head port, either launch; PONG_TRAIN_RAY_PORT overrides MPI's (ranks on one machine)
RUNS_FOLDER_FLAG = "--azureml-runs-folder"  # the submitted command names it (spec.in_job_command)
START_UP_S = 30 * 60  # nodes starting and pip installing before training's own clock starts
DEFAULT_TIMEOUT_S = 24 * 3600  # without a time criterion a job still ends, and so does its bill


def is_gpu_size(vm_size: str) -> bool:
    return bool(GPU_FAMILY.match(vm_size))


class AzureOptions(BaseModel):
    """The azureml backend's settings; each field is one command-line option, its docstring the option's help."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    dry_run: Annotated[bool, Flag("--dry-run")] = False
    """Write the job spec, environment and upload list to the run directory; no network."""
    no_wait: Annotated[bool, Flag("--no-wait")] = False
    """Return once the job is submitted."""
    launch: Annotated[Literal["ray", "mpi"], Flag("--azureml-launch")] = "ray"
    """ray: Azure ML starts Ray (RayDistribution); mpi: an MPI job that starts Ray itself."""
    sdk: Annotated[Literal["v2", "v1"], Flag("--azureml-sdk")] = "v2"
    """v1 builds the article's retired ReinforcementLearningEstimator."""
    workspace_config: Annotated[Optional[Path], Flag("--workspace-config", type=click.Path(path_type=Path))] = None
    """Workspace config.json [default: found from the current folder up]."""
    subscription: Annotated[Optional[str], Flag("--subscription")] = None
    """Azure subscription id (instead of config.json)."""
    resource_group: Annotated[Optional[str], Flag("--resource-group")] = None
    """Resource group of the workspace."""
    workspace: Annotated[Optional[str], Flag("--workspace")] = None
    """Azure ML workspace name."""
    experiment: Annotated[str, Flag("--experiment")] = DEFAULT_EXPERIMENT
    """Experiment name."""
    display_name: Annotated[Optional[str], Flag("--display-name")] = None
    """Display name of the job."""
    tags: Annotated[dict[str, str], Flag("--tag", multiple=True, metavar="KEY=VALUE")] = {}
    """Job tag (repeatable)."""
    compute: Annotated[str, Flag("--compute")] = "pong-train"
    """Compute cluster: reused if present, created if missing."""
    head_compute: Annotated[Optional[str], Flag("--head-compute")] = None
    """--azureml-sdk v1: the Ray head's cluster, the article's GPU one [default: --compute]."""
    worker_compute: Annotated[Optional[str], Flag("--worker-compute")] = None
    """--azureml-sdk v1: the Ray workers' cluster, the article's CPU one [default: --compute]."""
    vm_size: Annotated[Optional[str], Flag(
        "--vm-size", help=f"VM size [default: {GPU_VM_SIZE} with a GPU, else {CPU_VM_SIZE}].")] = None
    instance_count: Annotated[int, Flag("--instance-count", type=click.IntRange(min=1))] = 2
    """Nodes of the Ray cluster."""
    min_instances: Annotated[int, Flag("--min-instances", type=click.IntRange(min=0))] = 0
    """Cluster minimum nodes."""
    max_instances: Annotated[Optional[int], Flag("--max-instances", type=click.IntRange(min=1))] = None
    """Cluster maximum nodes [default: --instance-count]."""
    idle_seconds: Annotated[int, Flag("--idle-seconds", type=click.IntRange(min=60))] = 1800
    """Idle time before the cluster scales down."""
    low_priority: Annotated[bool, Flag("--low-priority")] = False
    """Low-priority (preemptible) nodes."""
    vnet: Annotated[Optional[str], Flag("--vnet")] = None
    """Virtual network of the cluster (with --subnet)."""
    subnet: Annotated[str, Flag("--subnet")] = "default"
    """Subnet of --vnet."""
    datastore: Annotated[str, Flag("--datastore")] = "workspaceblobstore"
    """Datastore that keeps the run directory, so `pong-train azureml resume` can continue a stopped job."""
    image: Annotated[Optional[str], Flag("--image")] = None
    """Docker image [default: Azure ML's OpenMPI image, CUDA one for GPU sizes]."""
    shm_size: Annotated[str, Flag("--shm-size")] = "16g"
    """Shared memory per node (at least 8g)."""
    timeout: Annotated[Optional[int], Flag("--timeout", type=click.IntRange(min=60))] = None
    """Job time limit in seconds [default: the stop's time_total_s plus 30 minutes, else 24 h]."""
    env_vars: Annotated[dict[str, str], Flag("--env-var", multiple=True, metavar="NAME")] = {}
    """Forward this environment variable to the job (repeatable); nothing is forwarded unnamed."""
    in_job: Annotated[Optional[Literal["ray", "mpi"]], Flag("--azureml-in-job", hidden=True)] = None
    """Set in the submitted job: this process runs inside the Azure ML job."""
    runs_folder: Annotated[Optional[Path], Flag(RUNS_FOLDER_FLAG, hidden=True, type=click.Path(path_type=Path))] = None
    """Set by the submitted command: where Azure ML mounted the job's `runs` output, the run directory's parent."""

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, given: Any) -> Any:
        if isinstance(given, dict):
            return given
        tags = {}
        for tag in given:
            key, sep, value = tag.partition("=")
            if not sep or not key:
                raise ValueError(f"{tag!r} is not KEY=VALUE")
            tags[key] = value
        return tags

    @field_validator("compute", "head_compute", "worker_compute", "experiment", "datastore", "display_name")
    @classmethod
    def _service_name(cls, name: Optional[str], info: Any) -> Optional[str]:
        rule, why = NAME_RULES["compute" if info.field_name.endswith("compute") else info.field_name]
        if name is not None and not rule.match(name):
            raise ValueError(f"{name!r}: {why}")
        return name

    @field_validator("vm_size")
    @classmethod
    def _vm_size(cls, vm_size: Optional[str]) -> Optional[str]:
        if vm_size is not None and not VM_SIZE.match(vm_size):
            raise ValueError(f"{vm_size!r} is not an Azure VM size like {GPU_VM_SIZE} or {CPU_VM_SIZE}")
        return vm_size

    @field_validator("shm_size")
    @classmethod
    def _shm_size(cls, shm_size: str) -> str:
        shm = SHM_SIZE.match(shm_size)
        if not shm:
            raise ValueError(f"{shm_size!r} is not a size like 16g")
        if int(shm.group(1)) / {"k": 1024**2, "m": 1024, "g": 1}[shm.group(2).lower()] < 8:
            raise ValueError(f"{shm_size} is below 8g; Ray's object store needs the shared memory")
        return shm_size

    @field_validator("env_vars", mode="before")
    @classmethod
    def _env_vars(cls, given: Any) -> Any:
        if isinstance(given, dict):
            return given
        for name in given:
            if SECRET_NAME.search(name):
                raise ValueError(f"{name} looks like a secret; secrets never go into job specs, "
                                 "use an Azure Key Vault reference or a workspace connection")
            if name not in os.environ:
                raise ValueError(f"{name} is not set in this environment")
        return {name: os.environ[name] for name in given}

    @model_validator(mode="after")
    def _together(self) -> "AzureOptions":
        self.max_instances = self.max_instances or self.instance_count
        if self.instance_count > self.max_instances:
            raise ValueError(f"--instance-count {self.instance_count} exceeds --max-instances {self.max_instances}")
        if self.sdk == "v1" and self.launch == "mpi":
            raise ValueError("--azureml-launch mpi is for --azureml-sdk v2; the v1 estimator starts Ray itself")
        # Both default to --compute, which is what a job file keeps of them for v2.
        if self.sdk == "v2" and {self.head_compute, self.worker_compute} - {None, self.compute}:
            raise ValueError("--head-compute and --worker-compute are for --azureml-sdk v1; "
                             "a v2 job runs its head and workers on one cluster, --compute")
        self.head_compute = self.head_compute or self.compute
        self.worker_compute = self.worker_compute or self.compute
        return self

    def vm_size_for(self, wants_gpu: bool) -> str:
        return self.vm_size or (GPU_VM_SIZE if wants_gpu else CPU_VM_SIZE)

    def image_for(self, vm_size: str) -> str:
        return self.image or (GPU_IMAGE if is_gpu_size(vm_size) else CPU_IMAGE)


def azure_options(job_options: dict[str, Any]) -> AzureOptions:
    """The backend's options as a job keeps them (`job.options["azureml"]`), typed; missing ones take their defaults."""
    return validated(AzureOptions, job_options.get(PLUGIN, {}))  # type: ignore[return-value]


def job_timeout(job: Job, opts: AzureOptions) -> int:
    """How long the job may run, the submit side's limit and the nodes' alike: --timeout, else the stop's time_total_s
    (once per trial: trials that do not fit the cluster at once queue) plus START_UP_S, else DEFAULT_TIMEOUT_S."""
    if opts.timeout:
        return opts.timeout
    if "time_total_s" in job.stop:
        return int(job.stop["time_total_s"]) * len(job.trials()) + START_UP_S
    return DEFAULT_TIMEOUT_S
