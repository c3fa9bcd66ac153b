"""The azureml backend's command-line options, and their parsed, validated form."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Optional

import click

from pong_train.errors import UsageError

DEFAULT_EXPERIMENT = "rllib-pong-multi-node"
GPU_VM_SIZE = "Standard_NC4as_T4_v3"
CPU_VM_SIZE = "Standard_D4s_v3"
GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04:latest"
CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"

VM_SIZE = re.compile(r"^(standard|basic)_[a-z]+\d+[a-z0-9_-]*$", re.IGNORECASE)
# N-series sizes carry GPUs: NC (compute), ND (deep learning), NV (visualisation), NG.
GPU_FAMILY = re.compile(r"^(standard_)?n[cdvg]", re.IGNORECASE)
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CONNECTION_STRING|SAS|CREDENTIAL", re.IGNORECASE)
SHM_SIZE = re.compile(r"^(\d+)([kmg])$", re.IGNORECASE)


def is_gpu_size(vm_size: str) -> bool:
    return bool(GPU_FAMILY.match(vm_size))


def cli_options() -> list[click.Option]:
    return [
        click.Option(["--dry-run"], is_flag=True,
                     help="Write the job spec, environment and upload list to the run directory; no network."),
        click.Option(["--no-wait"], is_flag=True, help="Return once the job is submitted."),
        click.Option(["--azureml-launch"], type=click.Choice(["ray", "mpi"]), default="ray", show_default=True,
                     help="ray: Azure ML starts Ray (RayDistribution); mpi: an MPI job that starts Ray itself."),
        click.Option(["--azureml-sdk"], type=click.Choice(["v2", "v1"]), default="v2", show_default=True,
                     help="v1 builds the article's retired ReinforcementLearningEstimator."),
        click.Option(["--workspace-config"], type=click.Path(path_type=Path),
                     help="Workspace config.json [default: found from the current folder up]."),
        click.Option(["--subscription"], help="Azure subscription id (instead of config.json)."),
        click.Option(["--resource-group"], help="Resource group of the workspace."),
        click.Option(["--workspace"], help="Azure ML workspace name."),
        click.Option(["--experiment"], default=DEFAULT_EXPERIMENT, show_default=True, help="Experiment name."),
        click.Option(["--display-name"], help="Display name of the job."),
        click.Option(["--tag", "tags"], multiple=True, metavar="KEY=VALUE", help="Job tag (repeatable)."),
        click.Option(["--compute"], default="pong-train-cluster", show_default=True,
                     help="Compute cluster: reused if present, created if missing."),
        click.Option(["--vm-size"], help=f"VM size [default: {GPU_VM_SIZE} with a GPU, else {CPU_VM_SIZE}]."),
        click.Option(["--instance-count"], type=click.IntRange(min=1), default=2, show_default=True,
                     help="Nodes of the Ray cluster."),
        click.Option(["--min-instances"], type=click.IntRange(min=0), default=0, show_default=True,
                     help="Cluster minimum nodes."),
        click.Option(["--max-instances"], type=click.IntRange(min=1),
                     help="Cluster maximum nodes [default: --instance-count]."),
        click.Option(["--idle-seconds"], type=click.IntRange(min=60), default=1800, show_default=True,
                     help="Idle time before the cluster scales down."),
        click.Option(["--low-priority"], is_flag=True, help="Low-priority (preemptible) nodes."),
        click.Option(["--vnet"], help="Virtual network of the cluster (with --subnet)."),
        click.Option(["--subnet"], default="default", show_default=True, help="Subnet of --vnet."),
        click.Option(["--image"], help="Docker image [default: Azure ML's OpenMPI image, CUDA one for GPU sizes]."),
        click.Option(["--shm-size"], default="16g", show_default=True, help="Shared memory per node (at least 8g)."),
        click.Option(["--timeout"], type=click.IntRange(min=60),
                     help="Job time limit in seconds [default: the stop's time_total_s plus 30 minutes, else 24 h]."),
        click.Option(["--env-var", "env_vars"], multiple=True, metavar="NAME",
                     help="Forward this environment variable to the job (repeatable); nothing is forwarded unnamed."),
        click.Option(["--azureml-in-job"], type=click.Choice(["ray", "mpi"]), hidden=True,
                     help="Set by the submitted command: this process runs inside the Azure ML job."),
    ]


@dataclasses.dataclass
class AzureOptions:
    dry_run: bool
    no_wait: bool
    launch: str
    sdk: str
    workspace_config: Optional[Path]
    subscription: Optional[str]
    resource_group: Optional[str]
    workspace: Optional[str]
    experiment: str
    display_name: Optional[str]
    tags: dict[str, str]
    compute: str
    vm_size: Optional[str]
    instance_count: int
    min_instances: int
    max_instances: int
    idle_seconds: int
    low_priority: bool
    vnet: Optional[str]
    subnet: str
    image: Optional[str]
    shm_size: str
    timeout: Optional[int]
    env_vars: dict[str, str]
    in_job: Optional[str]

    def vm_size_for(self, wants_gpu: bool) -> str:
        return self.vm_size or (GPU_VM_SIZE if wants_gpu else CPU_VM_SIZE)

    def image_for(self, vm_size: str) -> str:
        return self.image or (GPU_IMAGE if is_gpu_size(vm_size) else CPU_IMAGE)


def parse_options(options: dict[str, Any]) -> AzureOptions:
    """Validate the raw option values; bad ones raise UsageError (one line, exit 2)."""
    tags = {}
    for tag in options["tags"]:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {tag!r} is not KEY=VALUE")
        tags[key] = value
    vm_size = options["vm_size"]
    if vm_size is not None and not VM_SIZE.match(vm_size):
        raise UsageError(f"--vm-size {vm_size!r} is not an Azure VM size like Standard_NC6 or Standard_D4s_v3")
    shm = SHM_SIZE.match(options["shm_size"])
    if not shm:
        raise UsageError(f"--shm-size {options['shm_size']!r} is not a size like 16g")
    shm_gib = int(shm.group(1)) / {"k": 1024**2, "m": 1024, "g": 1}[shm.group(2).lower()]
    if shm_gib < 8:
        raise UsageError(f"--shm-size {options['shm_size']} is below 8g; Ray's object store needs the shared memory")
    env_vars = {}
    for name in options["env_vars"]:
        if SECRET_NAME.search(name):
            raise UsageError(f"--env-var {name} looks like a secret; secrets never go into job specs, "
                             "use an Azure Key Vault reference or a workspace connection")
        if name not in os.environ:
            raise UsageError(f"--env-var {name} is not set in this environment")
        env_vars[name] = os.environ[name]
    max_instances = options["max_instances"] or options["instance_count"]
    if options["instance_count"] > max_instances:
        raise UsageError(f"--instance-count {options['instance_count']} exceeds --max-instances {max_instances}")
    if options["azureml_sdk"] == "v1" and options["azureml_launch"] == "mpi":
        raise UsageError("--azureml-launch mpi is for --azureml-sdk v2; the v1 estimator starts Ray itself")
    return AzureOptions(
        dry_run=options["dry_run"], no_wait=options["no_wait"], launch=options["azureml_launch"],
        sdk=options["azureml_sdk"], workspace_config=options["workspace_config"],
        subscription=options["subscription"], resource_group=options["resource_group"],
        workspace=options["workspace"], experiment=options["experiment"], display_name=options["display_name"],
        tags=tags, compute=options["compute"], vm_size=vm_size, instance_count=options["instance_count"],
        min_instances=options["min_instances"], max_instances=max_instances, idle_seconds=options["idle_seconds"],
        low_priority=options["low_priority"], vnet=options["vnet"], subnet=options["subnet"],
        image=options["image"], shm_size=options["shm_size"], timeout=options["timeout"], env_vars=env_vars,
        in_job=options["azureml_in_job"],
    )
