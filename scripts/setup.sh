#!/usr/bin/env bash
# Set up this machine for the project: system packages, a Docker engine, and the Python environment in .venv.
# Idempotent: a second run only checks. Needs root on Debian 12 / Ubuntu 22.04+.
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: promtool, for the alert rules' unit tests (tests/unit/test_monitoring.py); its daemon is not started.
APT_PACKAGES=(docker.io mmdebstrap libb64-0d python3-venv rsync curl ca-certificates docker-registry skopeo prometheus)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Install without starting the packages' daemons (prometheus would listen on :9090 here): a policy-rc.d of our
  # own for the install, unless the machine has one.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
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
