#!/usr/bin/env bash
# The serving benchmark (docs/BENCHMARK.md): scripts/bench.sh [--tiny] [tritonfleet bench options]
#   scripts/bench.sh           full run: W200 (200 users, 60 s) + concurrency sweep, roberta-base size (~15-20 min)
#   scripts/bench.sh --tiny    tiny model, seconds per setup (CI)
# Installs what the benchmark needs beyond scripts/setup.sh: the Flask/matplotlib/aiohttp/Ray Serve extras and
# onnxruntime-extensions if missing,
# perf_analyzer from the tritonclient==2.41.1 wheel (unpacked into build/bench/tools, NOT installed over the
# venv's tritonclient), libcudart.so.12 from nvidia-cuda-runtime-cu12 (perf_analyzer links it), apt libb64-0d.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/tritonfleet ]; then
  echo "bench: .venv missing: run scripts/setup.sh first" >&2
  exit 2
fi
PY=.venv/bin/python
if ! "$PY" -c 'import flask, matplotlib, aiohttp, ray.serve' 2>/dev/null; then
  echo "bench: installing the bench extras (flask, matplotlib, aiohttp, ray[serve])"
  .venv/bin/pip install -q "flask>=3" "matplotlib>=3.7" "aiohttp>=3.9" "ray[serve]>=2.40"
fi
if ! "$PY" -c 'import onnxruntime_extensions' 2>/dev/null; then
  echo "bench: installing onnxruntime-extensions (native preprocessing; part of the convert extra)"
  .venv/bin/pip install -q "onnxruntime-extensions>=0.15"
fi

TOOLS=build/bench/tools
PA_VERSION=2.41.1
install_perf_analyzer() {
  mkdir -p "$TOOLS/bin" "$TOOLS/lib" "$TOOLS/wheels"
  if ! dpkg-query -W -f='${Status}' libb64-0d 2>/dev/null | grep -q "install ok installed"; then
    if [ "$(id -u)" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libb64-0d >/dev/null; }
    else
      echo "bench: libb64-0d is missing and this is not root: perf_analyzer may not start" >&2
    fi
  fi
  if [ ! -x "$TOOLS/bin/perf_analyzer" ]; then
    echo "bench: fetching perf_analyzer (tritonclient==$PA_VERSION wheel, unpacked into $TOOLS)"
    .venv/bin/pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
      -d "$TOOLS/wheels" "tritonclient==$PA_VERSION"
    "$PY" - "$TOOLS" "$PA_VERSION" <<'PYEOF'
import glob, os, sys, zipfile
tools, version = sys.argv[1], sys.argv[2]
whl = glob.glob(f"{tools}/wheels/tritonclient-{version}-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    data = z.read(f"tritonclient-{version}.data/data/bin/perf_analyzer")
with open(f"{tools}/bin/perf_analyzer", "wb") as fh:
    fh.write(data)
os.chmod(f"{tools}/bin/perf_analyzer", 0o755)
PYEOF
  fi
  if [ ! -f "$TOOLS/lib/libcudart.so.12" ]; then
    echo "bench: fetching libcudart.so.12 (nvidia-cuda-runtime-cu12 wheel, unpacked into $TOOLS/lib)"
    .venv/bin/pip download -q --no-deps --only-binary=:all: -d "$TOOLS/wheels" "nvidia-cuda-runtime-cu12<13"
    "$PY" - "$TOOLS" <<'PYEOF'
import glob, sys, zipfile
tools = sys.argv[1]
whl = sorted(glob.glob(f"{tools}/wheels/nvidia_cuda_runtime_cu12-*.whl"))[-1]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/libcudart.so.12"))
    with open(f"{tools}/lib/libcudart.so.12", "wb") as fh:
        fh.write(z.read(name))
PYEOF
  fi
  LD_LIBRARY_PATH="$TOOLS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$TOOLS/bin/perf_analyzer" --version >/dev/null 2>&1
}
if ! install_perf_analyzer; then
  echo "bench: WARNING: perf_analyzer is not usable here; setup B falls back to the asyncio gRPC tensor client" >&2
fi

export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
echo "bench: $(date -u +%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
exec .venv/bin/tritonfleet bench "$@"
