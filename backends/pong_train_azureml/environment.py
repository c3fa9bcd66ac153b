"""The job's Python environment: every package it runs with, pinned to the versions tested here, resolved for the
job's nodes (Linux x86_64, CPython) whatever machine submits it."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import packaging.markers
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pong_train_azureml.options import CPU_TORCH_BUILD, GPU_TORCH_BUILD, is_gpu_size

TORCH_INDEX = "https://download.pytorch.org/whl/"
JOB_PYTHON = "3.11"
"""The job's Python: the version the pins were tested with (constraints.txt), whatever Python submits."""
OWN_BUILD_DEPENDENCIES = frozenset({"torch"})
"""Packages pinned alone: their build for the VM size (torch's CPU or CUDA wheel) brings its own dependencies
(CUDA's nvidia-* libraries, triton), which differ from build to build."""
IN_JOB_REQUIREMENTS = ("azureml-mlflow", "mlflow-skinny")
"""What the job itself imports beyond the core: MLflow logging into the job's run."""
CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"
"""The versions the tests ran with: the pin of a package the job needs that is not installed here."""


def job_marker_environment() -> dict[str, str]:
    """The environment markers (PEP 508) evaluate to on the job's nodes: Azure ML's Linux x86_64 images, with CPython
    of the version the conda file asks for (`JOB_PYTHON`)."""
    return {**packaging.markers.default_environment(), "os_name": "posix", "sys_platform": "linux", "platform_system": "Linux",
            "platform_machine": "x86_64", "platform_release": "", "platform_version": "",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "python_version": JOB_PYTHON, "python_full_version": f"{JOB_PYTHON}.0"}


def pinned_requirements() -> list[str]:
    """Everything the job runs with, each pinned to the version installed (and tested) here; the requirements' markers
    are evaluated for the job's nodes, not for this machine, and a package the nodes need that is not installed here
    takes its pin from constraints.txt (or goes unpinned, as its dependant asks for it). What torch's own build
    requires is left to that build (`OWN_BUILD_DEPENDENCIES`)."""
    target = job_marker_environment()

    def applies(req: Requirement, extras: set[str]) -> bool:
        return req.marker is None or any(req.marker.evaluate({**target, "extra": extra}) for extra in extras)

    core = [Requirement(r) for r in metadata.requires("pong-train") or []]
    pending = [r for r in core if applies(r, {""})] + [Requirement(r) for r in IN_JOB_REQUIREMENTS]
    pins: dict[str, str] = {}
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if name in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pins[name] = tested_pins().get(name) or f"{name}{req.specifier}"
            continue
        pins[name] = f"{name}=={dist.version.split('+')[0]}"  # a local label (torch's +cpu) would pin the CPU build
        if name in OWN_BUILD_DEPENDENCIES:
            continue
        pending += [sub for sub in map(Requirement, dist.requires or []) if applies(sub, set(req.extras) | {""})]
    return sorted(pins.values())


def tested_pins() -> dict[str, str]:
    """constraints.txt's pins by package name (none where pong-train was installed without it)."""
    if not CONSTRAINTS.is_file():
        return {}
    lines = [line.split("#", 1)[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return {canonicalize_name(Requirement(line).name): line for line in lines if "==" in line}


def job_requirements(vm_size: str) -> list[str]:
    """The job's pip lines: the pins, with torch's build for the VM size (CPU, or the GPU image's CUDA) named."""
    build = GPU_TORCH_BUILD if is_gpu_size(vm_size) else CPU_TORCH_BUILD
    pins = [f"{pin}+{build}" if pin.startswith("torch==") else pin for pin in pinned_requirements()]
    # Those builds are only on PyTorch's index; pinning the local label keeps pip from taking PyPI's default build.
    return [f"--extra-index-url {TORCH_INDEX}{build}", *pins]


def conda_spec(vm_size: str) -> dict[str, Any]:
    """The conda file: conda-forge alone (`nodefaults` keeps Anaconda's channels and their terms out)."""
    return {
        "name": "pong-train",
        "channels": ["conda-forge", "nodefaults"],
        "dependencies": [f"python={JOB_PYTHON}", "pip", {"pip": job_requirements(vm_size)}],
    }
