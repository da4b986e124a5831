"""How the benchmark judges what it measured: setup C's choice among candidates, the targets, the summary lines."""

from __future__ import annotations

from typing import Any

#: Issue 11's targets (they replace C/A >= 12 and C/D >= 0.9, out of reach on 2 cores: docs/BENCHMARK.md).
#: C against D is judged on D's best batch-invariant plan: the best way to run the model offline that still gives
#: each text the scores it has alone (what C serves).
TARGETS = {"C_vs_A_throughput_min": 10.0, "C_vs_B_throughput_min": 5.0, "C_vs_D_batch_invariant_min": 0.95,
           "C_vs_best_peer_throughput_min": 1.5, "C_p99_ms_max": 1500.0, "C_errors_max": 0}
#: The frameworks a user would pick instead of Triton (peer setups): R, Ray Serve.
PEERS = ("R",)
#: A run is provisional when other jobs used more CPU than this (cores) during any measurement.
QUIET_FOREIGN_CORES = 0.25
#: Throughput differences inside this band are noise: the same candidate measured 138.7 and 144.0 texts/s in two
#: 12 s tuning runs on the build machine.
TIE_BAND = 0.05
CHOICE_RULE = ("among candidates with zero errors: the highest throughput of those with p99 <= 1.5 s; if none "
               "meets it, the lowest p99 of those within 5% of the highest throughput (measurement noise)")


def choose_candidate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Setup C's choice among measured candidates (CHOICE_RULE)."""
    clean = [r for r in rows if r["errors"] == 0] or rows
    fast_enough = [r for r in clean if (r["p99_ms"] or 1e9) <= TARGETS["C_p99_ms_max"]]
    if fast_enough:
        return max(fast_enough, key=lambda r: r["throughput"])
    top = max(r["throughput"] for r in clean)
    close = [r for r in clean if r["throughput"] >= (1 - TIE_BAND) * top]
    return min(close, key=lambda r: r["p99_ms"] or 1e9)


def evaluate_targets(setups: dict[str, Any]) -> dict[str, Any]:
    """Each target's value and verdict (None where a setup needed for it did not run), and `all_pass`."""

    def w(name: str) -> dict[str, Any] | None:
        return setups.get(name, {}).get("w200")

    a, b, c, d = w("A"), w("B"), w("C"), w("D")
    out: dict[str, Any] = {}

    def ratio(x: dict[str, Any] | None, y: dict[str, Any] | None) -> float | None:
        if not x or not y or not y.get("throughput"):
            return None
        return round(x["throughput"] / y["throughput"], 3)

    peers = {n: setups[n]["w200"] for n in PEERS if setups.get(n, {}).get("w200", {}).get("throughput")}
    best_peer = max(peers, key=lambda n: peers[n]["throughput"], default=None)
    inv = d.get("batch_invariant_throughput") if d else None
    for key, other, target in (("C_vs_A_throughput", a, TARGETS["C_vs_A_throughput_min"]),
                               ("C_vs_B_throughput", b, TARGETS["C_vs_B_throughput_min"]),
                               ("C_vs_D_batch_invariant", {"throughput": inv} if inv else None,
                                TARGETS["C_vs_D_batch_invariant_min"]),
                               ("C_vs_best_peer_throughput", peers.get(best_peer or ""),
                                TARGETS["C_vs_best_peer_throughput_min"])):
        r = ratio(c, other)
        out[key] = {"value": r, "target": f">= {target}", "pass": None if r is None else r >= target}
    out["C_vs_best_peer_throughput"]["peer"] = best_peer
    p99 = c.get("p99_ms") if c else None
    out["C_p99_ms"] = {"value": p99, "target": f"<= {TARGETS['C_p99_ms_max']}",
                       "pass": None if p99 is None else p99 <= TARGETS["C_p99_ms_max"]}
    errs = c.get("errors") if c else None
    out["C_errors"] = {"value": errs, "target": "== 0", "pass": None if errs is None else errs == 0}
    verdicts = [v["pass"] for v in out.values()]
    out["all_pass"] = all(v is True for v in verdicts)
    # Not a target: C against D's overall best plan, which for dynamic int8 may batch texts whose scores then
    # depend on each other (C never serves it that way).
    out["info_C_vs_D_overall"] = {"value": ratio(c, d), "note": "C / D's best plan of any kind (informational)"}
    return out


def summary(report: dict[str, Any]) -> list[str]:
    """The lines `tritonfleet bench` prints: each setup's W200 figures, then each target's verdict."""
    lines = []
    for name, res in report["setups"].items():
        w = res["w200"]
        lines.append(f"{name}: {w['throughput']:.1f}/s  p50 {w.get('p50_ms')} ms  p95 {w.get('p95_ms')} ms  "
                     f"p99 {w.get('p99_ms')} ms  errors {w.get('errors')}  batch {w.get('avg_batch_size')}  "
                     f"peak RSS {res.get('server_peak_rss_mb')} MB")
    for key, v in report.get("targets", {}).items():
        if key.startswith("info_"):
            lines.append(f"{key[5:]}: {v['value']} ({v['note']})")
        elif isinstance(v, dict):
            lines.append(f"target {key}: {v['value']} ({v['target']}): "
                         f"{'PASS' if v['pass'] else ('n/a' if v['pass'] is None else 'FAIL')}")
    return lines
