#!/usr/bin/env bash
# The one-call GPU benchmark (docs/BENCHMARK.md, "GPU"; src/tritonfleet/bench/gpu.py):
#   scripts/gpu-bench.sh prepare              build machine: what the GPU host lacks -> build/gpu-carry (ignored)
#   scripts/gpu-bench.sh run --out DIR        GPU host: host facts, model, repository (KIND_GPU, fp16), serve,
#                                             W200 + sweep to 1,024 users, offline torch fp16; JSON (+ PNG) in DIR
#   scripts/gpu-bench.sh dry-run --out DIR    any CPU machine: the same at tiny scale, seconds (CI runs it)
#   scripts/gpu-bench.sh plot DIR             gpu-bench.png from DIR/gpu-bench.json (where matplotlib is)
# Python: $PYTHON, else .venv/bin/python where it runs, else python3 (the GPU host's own, with CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if .venv/bin/python -c 'import sys' 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "${1:-}" = prepare ] && ! "$PY" -c 'import jinja2, markupsafe, tqdm' 2>/dev/null; then
  echo "gpu-bench: prepare copies jinja2, markupsafe and tqdm from this Python: run scripts/setup.sh first" >&2
  exit 2
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = run ] && [ -f build/gpu-carry/site.tar.xz ]; then
  # the carried pure-Python packages (jinja2, tritonclient, ...) before anything imports them
  mkdir -p /tmp/tritonfleet-gpu && tar -xJf build/gpu-carry/site.tar.xz -C /tmp/tritonfleet-gpu
  export PYTHONPATH="$PYTHONPATH:/tmp/tritonfleet-gpu/site"
  # tritonclient's generated code needs protobuf >= 6.33: the carried one where the host's is older
  if ! "$PY" -c 'import google.protobuf as p, sys; sys.exit(tuple(map(int, p.__version__.split(".")[:2])) < (6, 33))' \
      2>/dev/null; then
    export PYTHONPATH="/tmp/tritonfleet-gpu/site/protobuf-fallback:$PYTHONPATH"
  fi
fi
exec "$PY" -m tritonfleet.bench.gpu "$@"
