"""NVIDIA's perf_analyzer (C++ load generator) for the tensor interface of setup B.

Recent tritonclient wheels do not ship it; `scripts/bench.sh` unpacks the one in the tritonclient==2.41.1
wheel into build/bench/tools/bin (and libcudart.so.12 from nvidia-cuda-runtime-cu12 into build/bench/tools/lib),
without touching the venv's tritonclient.
"""

from __future__ import annotations

import csv
import io
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import layout
from ..paths import BUILD_DIR

TOOLS_DIR = BUILD_DIR / "bench" / "tools"


def find_perf_analyzer(explicit: str | None = None) -> tuple[Path, dict[str, str]] | None:
    """(binary, extra environment) or None."""
    candidates = [explicit, os.environ.get("TRITONFLEET_PERF_ANALYZER"), str(TOOLS_DIR / "bin" / "perf_analyzer"),
                  shutil.which("perf_analyzer")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            binary = Path(c)
            libs = [str(TOOLS_DIR / "lib"), str(binary.parent.parent / "lib"), os.environ.get("LD_LIBRARY_PATH", "")]
            env = {"LD_LIBRARY_PATH": ":".join(p for p in libs if p)}
            try:
                r = subprocess.run([str(binary), "--version"], env={**os.environ, **env}, capture_output=True,
                                   timeout=30, check=False)
            except OSError:
                continue
            if b"perf_analyzer" in (r.stdout + r.stderr) or r.returncode == 0:
                return binary, env
    return None


def _rusage_children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(binary: Path, env: dict[str, str], url: str, data_file: Path, concurrency: int, duration: float,
        csv_file: Path, timeout: float = 900, model: str = layout.MODELS.classifier,
        max_threads: int = 2) -> dict[str, Any]:
    """One measurement: 3 windows of duration/3 s at a fixed concurrency (always 'stable': a fixed-length run).

    Returns throughput, latency percentiles (client side), errors (0 when perf_analyzer succeeded) and the
    load generator's own CPU time."""
    window_ms = max(2000, int(duration * 1000 / 3))
    for _attempt in range(2):
        out = _run_once(binary, env, url, data_file, concurrency, window_ms, csv_file, timeout, model, max_threads)
        unstable = any("stable measurement" in line for line in out.get("error_samples", []))
        if not unstable:
            break
        window_ms *= 2  # too few requests per window (a slow setup at low concurrency): longer windows
    return out


def _run_once(binary: Path, env: dict[str, str], url: str, data_file: Path, concurrency: int, window_ms: int,
              csv_file: Path, timeout: float, model: str, max_threads: int = 2) -> dict[str, Any]:
    csv_file.unlink(missing_ok=True)
    cmd = [str(binary), "-m", model, "-u", url, "-i", "grpc", "--async", "-b", "1", "--max-threads", str(max_threads),
           "--concurrency-range", f"{concurrency}:{concurrency}", "--input-data", str(data_file),
           "--measurement-mode", "time_windows", "--measurement-interval", str(window_ms),
           "--stability-percentage", "999", "--max-trials", "3", "-f", str(csv_file)]
    cpu0, t0 = _rusage_children_cpu(), time.monotonic()
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
                          check=False)
    wall, cpu = time.monotonic() - t0, _rusage_children_cpu() - cpu0
    out: dict[str, Any] = {"users": concurrency, "duration_s": round(3 * window_ms / 1000, 1),
                           "load_generator": "perf_analyzer (tritonclient 2.41.1, gRPC, async)",
                           "client_cpu_s": round(cpu, 2), "client_cpu_cores": round(cpu / max(wall, 1e-9), 3),
                           "command": " ".join(cmd)}
    if proc.returncode != 0 or not csv_file.is_file():
        text = (proc.stdout + proc.stderr).strip().splitlines()
        errs = [line for line in text if "error" in line.lower()]
        out.update({"throughput": 0.0, "completed": 0, "errors": max(1, len(errs)),
                    "error_samples": (errs or text)[-5:], "p50_ms": None, "p95_ms": None, "p99_ms": None,
                    "mean_ms": None})
        return out
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text())))
    row = rows[-1]

    def ms(key: str) -> float | None:
        return round(float(row[key]) / 1000.0, 2) if row.get(key) not in (None, "") else None

    thr = float(row["Inferences/Second"])
    out.update({"throughput": round(thr, 2), "completed": int(round(thr * 3 * window_ms / 1000)), "errors": 0,
                "error_samples": [], "p50_ms": ms("p50 latency"), "p95_ms": ms("p95 latency"),
                "p99_ms": ms("p99 latency"), "mean_ms": ms("Avg latency")})
    return out
