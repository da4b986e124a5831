"""The benchmark's PNG: throughput and p99 per setup at W200, and throughput / p99 against concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"A": "tab:red", "B": "tab:orange", "C": "tab:green", "D": "tab:blue", "G": "tab:purple", "R": "tab:brown"}


def plot(report: dict[str, Any], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = report["setups"]
    names = sorted(setups, key=lambda n: "ABCDRG".find(n))
    users = report["workload"]["users"]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    thr = [setups[n]["w200"]["throughput"] for n in names]
    p99 = [setups[n]["w200"].get("p99_ms") or 0 for n in names]
    bars = ax[0, 0].bar(names, thr, color=[COLORS.get(n, "gray") for n in names])
    ax[0, 0].bar_label(bars, fmt="%.1f")
    ax[0, 0].set_title(f"Throughput at {users} users (inferences/s)")
    bars = ax[0, 1].bar(names, p99, color=[COLORS.get(n, "gray") for n in names])
    ax[0, 1].bar_label(bars, labels=[f"{v:.0f}" if v else "n/a" for v in p99])
    ax[0, 1].set_title(f"p99 latency at {users} users (ms; D: offline, none)")
    for n in names:
        pts = setups[n].get("sweep") or []
        if pts:
            xs = [p["users"] for p in pts]
            ax[1, 0].plot(xs, [p["throughput"] for p in pts], "o-", color=COLORS.get(n), label=n)
            ax[1, 1].plot(xs, [p.get("p99_ms") or float("nan") for p in pts], "o-", color=COLORS.get(n), label=n)
            ax[1, 1].plot(xs, [p.get("p50_ms") or float("nan") for p in pts], ":", color=COLORS.get(n))
        elif n == "D":
            ax[1, 0].axhline(setups[n]["w200"]["throughput"], color=COLORS["D"], ls="--", label="D (offline)")
    ax[1, 0].set_title("Throughput against concurrency")
    ax[1, 0].set_xlabel("concurrent users")
    ax[1, 0].set_ylabel("inferences/s")
    ax[1, 1].set_title("Latency against concurrency (p99 solid, p50 dotted)")
    ax[1, 1].set_xlabel("concurrent users")
    ax[1, 1].set_ylabel("ms")
    ax[1, 1].set_yscale("log")
    for a in ax[1]:
        a.set_xscale("log")
        a.legend()
        a.grid(alpha=0.3)
    tag = " (PROVISIONAL: machine not quiet)" if report.get("provisional") else ""
    fig.suptitle(f"tritonfleet bench: {report['model']['preset']} on {report['machine']['cpus']} CPUs{tag}")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
