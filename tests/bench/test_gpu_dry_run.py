"""The one-call GPU benchmark's dry run: the same script at tiny scale on this CPU machine (KIND_CPU, the venv's
tritonserver), so that it cannot rot between the rare runs on a GPU host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gpu_bench_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    env = {**os.environ, "TRITONFLEET_GPU_WORK": str(tmp_path / "work")}
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-bench.sh"), "dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert proc.stdout.lstrip().startswith("gpu-bench: host"), "the host facts come first"
    report = json.loads((out / "gpu-bench.json").read_text())
    assert report["dry_run"] is True and report["errors"] == {}
    assert report["repository"]["options"]["format"] == "torchscript"
    assert report["repository"]["options"]["instance_kind"] == "KIND_CPU"
    assert report["w200"]["throughput"] > 0 and report["w200"]["errors"] == 0
    assert report["w200"]["avg_batch_size"] >= 1
    assert [p["users"] for p in report["sweep"]] == [1, 4]
    assert all(p["throughput"] > 0 and p["errors"] == 0 for p in report["sweep"])
    assert report["offline"]["best"]["throughput"] > 0
    assert set(report["targets"]) == {"peak_throughput", "w200_p99_ms"}
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and {"gpu-bench.json", "gpu-bench.png", "tritonserver.log"} <= set(files)
    assert (out / "gpu-bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
