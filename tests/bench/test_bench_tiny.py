"""The serving benchmark end to end at tiny scale: setups A, B, C, D and the Ray Serve peer R, a 2-point sweep, C's
search with an int8-static and a native-preprocessing candidate, JSON and PNG.

Runs `scripts/bench.sh --tiny` (which also installs perf_analyzer into build/bench/tools when it can; without it,
setup B falls back to the asyncio gRPC tensor client). Starts real tritonservers and a Flask server on loopback.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_tiny(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run([str(ROOT / "scripts" / "bench.sh"), "--tiny", "--output", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads((out / "bench.json").read_text())
    assert report["errors"] == {}
    assert set(report["setups"]) >= {"A", "B", "C", "D", "R"}
    for name in ("A", "B", "C", "D", "R"):
        w = report["setups"][name]["w200"]
        assert w["throughput"] > 0, (name, w)
        assert w["errors"] == 0, (name, w)
    for name in ("A", "B", "C", "R"):
        sweep = report["setups"][name]["sweep"]
        assert [p["users"] for p in sweep] == [1, 8], name
        assert all(p["throughput"] > 0 and p["errors"] == 0 for p in sweep), (name, sweep)
        assert report["setups"][name]["server_peak_rss_mb"] > 0
    for name in ("B", "C"):
        assert report["setups"][name]["w200"]["avg_batch_size"] >= 1
    assert report["setups"]["B"]["w200"]["avg_batch_size"] == 1  # max_batch_size 1
    tried = report["setups"]["C"]["tuning"]["candidates"]
    assert tried, "setup C's search is recorded"
    # the int8 formats are forced on in --tiny: C's search measures the batch-invariant int8-static candidate, and
    # the tiny RoBERTa's BPE tokenizer passes native parity, so a native-preprocessing candidate is measured too
    assert set(report["int8_policy"]) == {"int8", "int8-static"}
    assert report["native_preprocessing"]["passed"] is True and report["native_preprocessing"]["texts"] >= 5000
    assert any(r["candidate"].get("format") == "int8-static" and r["throughput"] > 0 for r in tried)
    assert any(r["candidate"].get("preprocessing") == "native" and r["throughput"] > 0 for r in tried)
    r_cfg = report["setups"]["R"]["config"]
    c_cfg = report["setups"]["C"]["config"]
    assert r_cfg["format"] == c_cfg["format"], "R serves C's model"
    assert r_cfg["replicas"] * r_cfg["threads"] == c_cfg["instance_count"] * max(1, c_cfg["threads"])
    d_rows = report["setups"]["D"]["batch_search"]
    assert any(r["sub_batch_size"] for r in d_rows), "D tries sorted sub-batches"
    assert {r["processes"] for r in d_rows} == {1, 2}, "D runs one session and two one-thread sessions side by side"
    assert "int8-static" in {r["format"] for r in d_rows}, "D measures int8-static's plans too"
    assert report["setups"]["D"]["w200"]["batch_invariant_throughput"] > 0
    assert all(len(r["per_process"]) == 2 and r["throughput"] > 0 for r in d_rows if r["processes"] == 2)
    for name in ("A", "B", "C", "D", "R"):  # other jobs' CPU is measured for every setup
        assert report["setups"][name]["w200"]["foreign_cpu_cores"] >= 0, name
    assert report["machine"]["foreign_cpu_cores_max"] is not None
    assert set(report["targets"]) >= {"C_vs_A_throughput", "C_vs_B_throughput", "C_vs_D_batch_invariant",
                                      "C_vs_best_peer_throughput", "C_p99_ms", "C_errors", "all_pass"}
    assert report["targets"]["C_vs_best_peer_throughput"]["peer"] == "R"
    assert all("allowed" in p for p in report["int8_policy"].values())
    assert len(report["code"]["commit"]) == 40, report["code"]
    png = out / "bench.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
