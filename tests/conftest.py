"""Shared helpers: run the real `pong-train` entry point in a subprocess and read what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None):
    """`python -m pong_train ARGS` as a user would type it; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "pong_train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def run_dirs(storage: Path) -> list[Path]:
    return sorted(p for p in storage.iterdir() if p.is_dir()) if storage.exists() else []


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr naming every fragment, and no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "runs"
