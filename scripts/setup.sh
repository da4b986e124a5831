#!/usr/bin/env bash
# Set up this machine for the project: system packages, a Docker engine, and the Python environment in .venv.
# Idempotent: a second run only checks. Needs root on Debian 12 / Ubuntu 22.04+.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker.io mmdebstrap libb64-0d python3-venv rsync curl ca-certificates docker-registry skopeo)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scripts/docker-up.sh

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.tritonfleet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv (first run: a few minutes)"
  # torch is pinned (TRITONFLEET_TORCH_VERSION): the build machines' pip finds a local CPU wheel of 2.13.0, and an
  # unpinned torch would pull several GB of CUDA packages. Elsewhere, to get the CPU build from PyTorch's own index:
  # PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/setup.sh
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==${TRITONFLEET_TORCH_VERSION:-2.13.0}"
  .venv/bin/pip install -q -e ".[convert,serve,deploy,bench,dev]"
  touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
