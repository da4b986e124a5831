"""The benchmark run: the setups (`setups`) on the same machine, one JSON report and one PNG.

`Harness` orchestrates: it prepares the model (`artifacts`), measures servers (`load`, `measure_setup`), builds
their model repositories, runs each setup and writes the report as it goes (a failed setup loses only its own
figures). The setups, the servers and the scoring rules live in their own modules.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import layout
from ..convert import load_manifest
from ..paths import BUILD_DIR
from ..release import ModelOptions
from . import perfanalyzer, setups, workload
from .artifacts import int8_policy, prepare_artifacts
from .procmon import MachineMonitor, TreeMonitor, loadavg
from .scoring import QUIET_FOREIGN_CORES, evaluate_targets, summary
from .servers import Server, run_json

logger = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    preset: str = "roberta-base"
    model_dir: Path | None = None
    artifacts: Path | None = None
    output: Path = BUILD_DIR / "bench" / "results"
    setups: list[str] = field(default_factory=lambda: list(setups.SETUPS))
    users: int = 200
    duration: float = 60.0
    warmup: float = 10.0
    sweep: list[int] = field(default_factory=lambda: [1, 8, 32, 64, 128, 200])
    sweep_duration: float = 15.0
    sweep_warmup: float = 3.0
    tune: bool = True
    tune_duration: float = 12.0
    tune_warmup: float = 5.0
    #: Setup C's search: dicts of ModelOptions field names (None: setups.default_candidates).
    candidates: list[dict[str, Any]] | None = None
    int8: str = "auto"  # auto | on | off
    runtime: str | None = None  # onnx | int8 | int8-static: skip the runtime measurement
    int8_min_agreement: float = 0.99
    demo_artifacts: Path | None = None
    measure_demo_agreement: bool = True
    runtime_check_duration: float = 4.0
    offline_batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 16, 32, 64])
    # D also runs batches sorted by length, a few texts at a time (what the runner's sub_batch_size does).
    offline_sorted_batches: list[str] = field(default_factory=lambda: ["32x1", "32x2", "32x4", "32x8"])
    # D also runs N one-thread sessions in N processes side by side (what C's N instances x 1 thread do).
    offline_processes: int = 2
    offline_parallel_plans: list[str] = field(default_factory=lambda: ["1", "8", "32x1", "32x2", "32x4"])
    offline_parallel_start_delay: float = 15.0  # seconds for the side-by-side processes to load their sessions
    offline_duration: float = 8.0
    texts: int = 512
    timeout: float = 120.0
    ready_timeout: float = 600.0
    perf_analyzer: str | None = None
    gpu: bool = False
    tiny: bool = False


def _native_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The model's native preprocessing parity (from its conversion), without the per-text listing."""
    rep = manifest["parity"].get("native") or {"passed": False, "reason": "not measured by this conversion"}
    return {k: v for k, v in rep.items() if k != "listing"} | {"listed_differences": len(rep.get("listing", []))}


def code_version() -> dict[str, Any]:
    """The git commit of the code that ran, and whether the working tree had changes (None outside a checkout)."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


class Harness:
    """One benchmark run into `cfg.output`: what the setups share (config, artifacts, int8 policy, the machine's
    load and other jobs' CPU during each measurement) and how a server is measured."""

    #: Set by run() before any setup: the model directory, its conversion artifacts, the int8 policy.
    model_dir: Path
    artifacts: Path
    int8: dict[str, dict[str, Any]]
    #: The options setup C served (setup R serves the same model, format and CPU budget); None until C ran.
    c_options: ModelOptions | None = None

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        self.pa = perfanalyzer.find_perf_analyzer(cfg.perf_analyzer)
        self.loads: list[float] = []
        self.foreign: list[float] = []  # CPU cores other jobs used during each measurement

    # --- load ----------------------------------------------------------------------------------------
    def load(self, server: Server, mode: str, users: int, duration: float, warmup: float,
             pa_warmup: bool = False) -> dict[str, Any]:
        """One measured run against a server: client stats + server batch size, memory and CPU."""
        self.loads.append(loadavg())
        before = server.classifier_counts()
        machine = MachineMonitor().start()
        mon = TreeMonitor(server.pid).start()
        if mode == "perf_analyzer":
            assert self.pa is not None
            binary, env = self.pa
            data = self.out / "tensor_data.json"
            if pa_warmup and warmup > 0:  # a separate perf_analyzer run, discarded
                perfanalyzer.run(binary, env, server.url, data, users, warmup, self.out / "logs" / "pa-warmup.csv")
                if before is not None:
                    before = server.classifier_counts()
            res = perfanalyzer.run(binary, env, server.url, data, users, duration,
                                   self.out / "logs" / f"pa-{users}.csv")
        else:
            data = self.out / ("tensor_data.json" if mode == "grpc-tensor" else "texts.json")
            res = run_json([sys.executable, "-m", "tritonfleet.bench.loadgen", "--mode", mode, "--url", server.url,
                            "--data", str(data), "--users", str(users), "--duration", str(duration),
                            "--warmup", str(warmup), "--timeout", str(self.cfg.timeout)],
                           timeout=duration + warmup + self.cfg.timeout + 120)
        srv = mon.stop()
        res.update(machine.stop())
        self.foreign.append(res["foreign_cpu_cores"])
        after = server.classifier_counts()
        res["server_peak_rss_mb"] = srv["peak_rss_mb"]
        res["server_cpu_cores"] = srv["cpu_cores"]
        if before is not None and after is not None:
            inf, exe = after[0] - before[0], after[1] - before[1]
            res["classifier_inferences"], res["classifier_executions"] = inf, exe
            res["avg_batch_size"] = round(inf / exe, 2) if exe else None
        else:
            res["avg_batch_size"] = None
        res["loadavg_1m"] = self.loads[-1]
        logger.info("bench:   %s users=%d: %.1f inf/s, p50 %s ms, p99 %s ms, errors %d, batch %s, RSS %s MB",
                    mode, users, res["throughput"], res.get("p50_ms"), res.get("p99_ms"), res["errors"],
                    res.get("avg_batch_size"), res["server_peak_rss_mb"])
        return res

    def measure_setup(self, server: Server, mode: str) -> dict[str, Any]:
        """The main workload (W200 unless --users), then the concurrency sweep, against one server."""
        c = self.cfg
        w = self.load(server, mode, c.users, c.duration, c.warmup, pa_warmup=True)
        sweep = [self.load(server, mode, u, c.sweep_duration, c.sweep_warmup) for u in c.sweep]
        peak = max([w["server_peak_rss_mb"], *(p["server_peak_rss_mb"] for p in sweep)])
        return {"w200": w, "sweep": sweep, "server_peak_rss_mb": peak}

    def build_repo(self, name: str, opts: ModelOptions) -> Path:
        """A model repository (a one-model release of the default model name) serving this run's artifacts."""
        from ..repo import build_repository

        repo = self.out / "repos" / name
        build_repository([(layout.DEFAULT_MODEL_NAME, self.artifacts, opts)], repo)
        return repo

    # --- the run -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        c = self.cfg
        t_start = time.time()
        self.loads.append(loadavg())
        self.model_dir, self.artifacts = prepare_artifacts(c)
        manifest = load_manifest(self.artifacts)
        tok_file = self.artifacts / layout.TOKENIZER_DIR / "tokenizer.json"
        texts = workload.make_texts(tok_file, c.texts)
        lengths = workload.token_lengths(tok_file, texts, manifest["max_length"])
        workload.write_json(self.out / "texts.json", {"texts": texts})
        workload.write_json(self.out / "tensor_data.json",
                            workload.tensor_data(tok_file, texts, manifest["max_length"]))
        self.int8 = int8_policy(c)
        for fmt, policy in self.int8.items():
            logger.info("bench: %s policy: %s", fmt, policy["reason"])
        report: dict[str, Any] = {
            "tool": "tritonfleet bench", "code": code_version(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(c).items()},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_at_start": list(os.getloadavg())},
            "model": {"preset": c.preset, "dir": str(self.model_dir), "artifacts": str(self.artifacts),
                      "max_length": manifest["max_length"]},
            "workload": {"users": c.users, "duration_s": c.duration, "warmup_s": c.warmup, "texts": len(texts),
                         "tokens_min": min(lengths), "tokens_max": max(lengths),
                         "tokens_mean": round(sum(lengths) / len(lengths), 1), "sweep": c.sweep,
                         "sweep_duration_s": c.sweep_duration},
            "int8_policy": self.int8, "native_preprocessing": _native_summary(manifest),
            "setups": {}, "errors": {},
        }
        if self.pa is None and "B" in c.setups:
            logger.warning("bench: perf_analyzer not found (scripts/bench.sh installs it); setup B uses the "
                           "asyncio gRPC tensor client instead")
        runtime: dict[str, Any] | None = None
        if c.runtime:
            runtime = {"format": c.runtime, "threads": 2, "inter_op": 1, "execution_mode": "sequential"}
            report["runtime_selection"] = {"chosen": runtime, "note": "forced with --runtime (not measured)"}
        elif {"C", "D", "R"} & set(c.setups):
            rc = setups.runtime_check(self)
            report["runtime_selection"] = rc
            runtime = rc["chosen"]
            logger.info("bench: runtime chosen: %s", runtime)
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("D", lambda: setups.setup_d(self, runtime)), ("C", lambda: setups.setup_c(self, runtime)),
            ("R", lambda: setups.setup_r(self, runtime)), ("B", lambda: setups.setup_b(self)),
            ("A", lambda: setups.setup_a(self))]
        if c.gpu:
            plan.append(("G", lambda: setups.setup_g(self)))
        for name, fn in plan:
            if name not in c.setups and not (name == "G" and c.gpu):
                continue
            try:
                res = fn()
            except Exception as exc:  # noqa: BLE001 - one failed setup must not lose the others' figures
                logger.exception("bench: setup %s failed", name)
                report["errors"][name] = " ".join(str(exc).split())[:2000]
                continue
            res["description"] = setups.DESCRIPTIONS[name]
            report["setups"][name] = res
            self._write(report)
        report["targets"] = evaluate_targets(report["setups"])
        report["machine"]["loadavg_max_during_run"] = max(self.loads)
        report["machine"]["foreign_cpu_cores_max"] = max(self.foreign, default=None)
        report["machine"]["quiet"] = bool(self.foreign) and max(self.foreign) < QUIET_FOREIGN_CORES
        report["provisional"] = not report["machine"]["quiet"] or c.tiny
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report["elapsed_s"] = round(time.time() - t_start, 1)
        report["summary"] = summary(report)
        self._write(report)
        from .plot import plot

        plot(report, self.out / "bench.png")
        report["files"] = {"json": str(self.out / "bench.json"), "png": str(self.out / "bench.png")}
        self._write(report)
        return report

    def _write(self, report: dict[str, Any]) -> None:
        tmp = self.out / "bench.json.tmp"
        tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        tmp.replace(self.out / "bench.json")
