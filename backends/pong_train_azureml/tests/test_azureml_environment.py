"""The Azure ML job's environment as a Linux machine with PyPI's CUDA build of torch would write it."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from pong_train.testing.tools import run_cli, run_dirs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# What PyPI's torch 2.13.0 for Linux x86_64 requires beside the CPU build's own needs: CUDA's libraries and triton.
CUDA_TORCH_REQUIRES = """\
Requires-Dist: filelock
Requires-Dist: typing-extensions>=4.10.0
Requires-Dist: sympy>=1.13.3
Requires-Dist: networkx>=2.5.1
Requires-Dist: jinja2
Requires-Dist: fsspec>=0.8.5
Requires-Dist: nvidia-cuda-runtime-cu12==12.6.77; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: nvidia-cublas-cu12==12.6.4.1; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: nvidia-cudnn-cu12==9.10.2.21; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: nvidia-nccl-cu12==2.27.5; platform_system == "Linux" and platform_machine == "x86_64"
Requires-Dist: triton==3.5.0; platform_system == "Linux" and platform_machine == "x86_64"
"""


@pytest.fixture
def cuda_torch_first(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH that puts a torch distribution with the CUDA build's metadata ahead of the installed one."""
    site = tmp_path / "site"
    dist_info = site / f"torch-{version('torch').split('+')[0]}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: torch\nVersion: {version('torch').split('+')[0]}\n{CUDA_TORCH_REQUIRES}")
    return {"PYTHONPATH": str(site)}


@pytest.mark.parametrize("vm_size, build", [("Standard_NC4as_T4_v3", "cu126"), ("Standard_D4s_v3", "cpu")])
def test_no_cuda_library_is_pinned_when_torch_here_is_the_cuda_build(tmp_path, cuda_torch_first, vm_size, build):
    storage = tmp_path / "runs"
    proc = run_cli("--backend", "azureml", "--dry-run", "--vm-size", vm_size, "--storage-path", str(storage),
                   env=cuda_torch_first, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run_dir] = run_dirs(storage)
    environment = yaml.safe_load((run_dir / "azureml" / "environment.yaml").read_text())
    [pip] = [entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict)]
    assert not [line for line in pip if line.startswith(("nvidia-", "triton"))], pip
    assert f"torch=={version('torch').split('+')[0]}+{build}" in pip
    assert any(line.startswith("ray==") for line in pip)  # the rest of the tree is still pinned
    # conda-forge alone, and the Python the pins were tested with, whatever Python submits.
    assert environment["channels"] == ["conda-forge", "nodefaults"]
    assert "python=3.11" in environment["dependencies"]
