#!/usr/bin/env bash
# Set-up on a fresh machine: a .venv with pong-train and the exact versions it was tested with.
# Usage: scripts/setup.sh [EXTRA ...]   e.g. scripts/setup.sh dev azureml
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned: a looser torch requirement pulls the CUDA build and gigabytes of packages.
.venv/bin/python -m pip install --quiet -c constraints.txt torch==2.13.0
extras=$(IFS=,; echo "$*")
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extras:+[$extras]}"
# The dev set-up also installs the example third-party backend, as a plugin author would install theirs.
case ",$extras," in *,dev,*) .venv/bin/python -m pip install --quiet -c constraints.txt ./examples/pong-train-example-backend ;; esac
