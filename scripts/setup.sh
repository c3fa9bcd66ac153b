#!/usr/bin/env bash
# Set-up on a fresh machine: a .venv with pong-train and the exact versions it was tested with.
# Usage: scripts/setup.sh [EXTRA ...]   e.g. scripts/setup.sh dev azureml
# On Linux torch's CPU build is installed (about 190 MB) unless TORCH_BUILD=cuda asks for PyPI's CUDA build
# (several GB with its nvidia-* libraries), which a GPU learner needs.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=torch==2.13.0
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet -c constraints.txt)
"${pip[@]}" --upgrade pip

# torch first, pinned: a looser torch requirement, or PyPI's torch on Linux, pulls the CUDA build.
install_torch() {
    # A torch wheel this machine already holds (pip's find-links) needs no download at all.
    if "${pip[@]}" --no-index --no-deps "$TORCH" 2>/dev/null; then
        return
    fi
    if [[ "$(uname -s)" == Linux && "${TORCH_BUILD:-cpu}" == cpu ]]; then
        # PyTorch's own index holds the CPU build; where it cannot be reached, give up on it within seconds.
        if "${pip[@]}" --no-deps --index-url "$TORCH_CPU_INDEX" --timeout 10 --retries 1 "$TORCH"; then
            return
        fi
        echo "setup: PyTorch's CPU wheel index cannot be reached; installing torch from the default index" \
             "(on Linux that is the CUDA build, several GB)" >&2
    fi
    "${pip[@]}" "$TORCH"
}
install_torch
"${pip[@]}" "$TORCH"  # torch's own dependencies, from the default index

extras=$(IFS=,; echo "$*")
"${pip[@]}" -e ".${extras:+[$extras]}"
# The dev set-up also installs the example third-party backend, as a plugin author would install theirs.
case ",$extras," in *,dev,*) "${pip[@]}" ./examples/pong-train-example-backend ;; esac
