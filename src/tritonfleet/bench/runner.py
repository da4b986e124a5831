"""The benchmark run: four setups on the same machine, one JSON report and one PNG.

A  Flask dev server (threaded), PyTorch eager, tokenizing per request          HTTP, raw text, asyncio client
B  Triton, TorchScript via the python-backend runner, max_batch_size 1          gRPC, token ids, perf_analyzer
C  Triton, this project's default: ensemble (server-side tokenization),         gRPC, raw text, asyncio client
   dynamic batching, runtime + instance settings chosen by measurement
D  the same runtime and model in-process (onnxruntime), best batch size         no server
(G, opt-in with --gpu: C's pipeline with the TorchScript runner on KIND_GPU in fp16, for a GPU host.)
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import layout
from ..paths import BUILD_DIR
from ..serve import free_ports
from . import perfanalyzer, workload
from .procmon import MachineMonitor, TreeMonitor

logger = logging.getLogger(__name__)

SETUPS = ("A", "B", "C", "D")
DESCRIPTIONS = {
    "A": "Flask dev server (app.run(threaded=True), one process), PyTorch eager, tokenizing per request; HTTP",
    "B": "Triton, TorchScript (python-backend runner on CPU), max_batch_size 1, client-side tokenization; gRPC "
         "tensor interface (sentiment_classifier INPUT__0/INPUT__1)",
    "C": "Triton, ensemble 'sentiment' (server-side tokenization), dynamic batching, ONNX Runtime via the "
         "python-backend runner, settings chosen by measurement; gRPC raw text",
    "D": "the same ONNX Runtime session and model in-process, no server, best batch size (tokenization included)",
    "G": "Triton, ensemble, TorchScript runner on KIND_GPU in fp16 (python backend); gRPC raw text",
}
TARGETS = {"C_vs_A_throughput_min": 12.0, "C_vs_B_throughput_min": 5.0, "C_vs_D_throughput_min": 0.90,
           "C_p99_ms_max": 1500.0, "C_errors_max": 0}
#: A run is provisional when other jobs used more CPU than this (cores) during any measurement.
QUIET_FOREIGN_CORES = 0.25


@dataclass
class BenchConfig:
    preset: str = "roberta-base"
    model_dir: Path | None = None
    artifacts: Path | None = None
    output: Path = BUILD_DIR / "bench" / "results"
    setups: list[str] = field(default_factory=lambda: list(SETUPS))
    users: int = 200
    duration: float = 60.0
    warmup: float = 10.0
    sweep: list[int] = field(default_factory=lambda: [1, 8, 32, 64, 128, 200])
    sweep_duration: float = 15.0
    sweep_warmup: float = 3.0
    tune: bool = True
    tune_duration: float = 12.0
    tune_warmup: float = 5.0
    candidates: list[dict[str, Any]] | None = None
    int8: str = "auto"  # auto | on | off
    runtime: str | None = None  # onnx | int8: skip the runtime measurement
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


def default_candidates(max_batch_size: int = 64, fmt: str = "onnx") -> list[dict[str, Any]]:
    """The short search over server settings for setup C (threads x instances <= the 2 cores).

    On 2 CPU cores padding short texts to a long one costs more than batching gains, so most candidates sort
    each dynamic batch by length and run it a few texts at a time (sub_batch_size); one candidate runs the
    whole batch at once, the GPU-style setting, for comparison. The int8 model is always served one row per run
    (its dynamic quantization would otherwise make a text's scores depend on its neighbours), so its candidates
    vary the instances, threads and queue delay instead.
    """
    if fmt == "int8":
        # With 2 instances, a max_batch_size near the user count leaves one instance idle (one batch takes all
        # the queued requests): smaller batches keep both busy and shorten the wait behind a batch.
        return [
            {"instance_count": 1, "threads": 2, "max_queue_delay_us": 5000, "max_batch_size": max_batch_size,
             "sub_batch_size": 1},
            {"instance_count": 2, "threads": 1, "max_queue_delay_us": 5000, "max_batch_size": 32, "sub_batch_size": 1},
            {"instance_count": 2, "threads": 1, "max_queue_delay_us": 2000, "max_batch_size": 16, "sub_batch_size": 1},
            {"instance_count": 2, "threads": 1, "max_queue_delay_us": 1000, "max_batch_size": 8, "sub_batch_size": 1},
        ]
    return [
        {"instance_count": 1, "threads": 2, "max_queue_delay_us": 5000, "max_batch_size": max_batch_size,
         "sub_batch_size": 2},
        {"instance_count": 1, "threads": 2, "max_queue_delay_us": 5000, "max_batch_size": max_batch_size,
         "sub_batch_size": 4},
        {"instance_count": 1, "threads": 2, "max_queue_delay_us": 5000, "max_batch_size": 32, "sub_batch_size": 1},
        {"instance_count": 2, "threads": 1, "max_queue_delay_us": 5000, "max_batch_size": 32, "sub_batch_size": 2},
        {"instance_count": 1, "threads": 2, "max_queue_delay_us": 5000, "max_batch_size": 32, "sub_batch_size": 0},
    ]


# --- helpers --------------------------------------------------------------------------------------------

def free_port() -> int:
    return free_ports(1)[0]


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}


def served_rows_per_run(fmt: str, wanted: int) -> int:
    """Rows per run the python runner may use for `fmt`: build-repo's own rule (int8: 1), else `wanted`."""
    from ..repo import RepoOptions

    return RepoOptions(runner_format=fmt).effective_sub_batch_size() or wanted


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


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run a python helper (loadgen, offline) and return the JSON it prints."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare_artifacts(cfg: BenchConfig) -> tuple[Path, Path]:
    """(Hugging Face model dir, conversion artifacts) for the preset, built once and cached under build/bench."""
    from ..convert import ConvertOptions, cache_key, convert, load_manifest
    from ..random_model import make_random_model

    model_dir = cfg.model_dir or BUILD_DIR / "bench" / "models" / cfg.preset
    name = cfg.model_dir.name if cfg.model_dir else cfg.preset
    artifacts = cfg.artifacts or BUILD_DIR / "bench" / "artifacts" / name
    if not (model_dir / "config.json").is_file():
        if cfg.model_dir:
            raise ValueError(f"--model-dir {model_dir}: not a Hugging Face model directory (no config.json)")
        logger.info("bench: writing a random %s model to %s", cfg.preset, model_dir)
        make_random_model(model_dir, cfg.preset)
    need = [layout.TORCHSCRIPT_FILE, layout.ONNX_FILE, layout.ONNX_INT8_FILE]
    opts = ConvertOptions(model=str(model_dir), output=artifacts, formats=("torchscript", "onnx", "int8"),
                          int8_min_agreement=0.0)
    ok = (artifacts / layout.MANIFEST_FILE).is_file() and all((artifacts / f).is_file() for f in need)
    if ok and not cfg.artifacts and load_manifest(artifacts).get("cache_key") != cache_key(opts):
        logger.info("bench: %s was converted with other options or another tool version: converting again",
                    artifacts)
        ok = False
    if ok:
        logger.info("bench: reusing artifacts %s (model %s)", artifacts, load_manifest(artifacts).get("model"))
    elif cfg.artifacts:
        raise ValueError(f"--artifacts {artifacts}: needs {', '.join(need)} (convert --formats torchscript,onnx,int8)")
    else:
        logger.info("bench: converting %s to %s (torchscript, onnx, int8)", model_dir, artifacts)
        convert(opts)
    return model_dir, artifacts


def int8_policy(cfg: BenchConfig) -> dict[str, Any]:
    """Whether int8 may be the default: its label agreement with fp32 on the DEMO model's golden set."""
    if cfg.int8 in ("on", "off"):
        return {"allowed": cfg.int8 == "on", "label_agreement": None, "reason": f"forced with --int8 {cfg.int8}"}
    from ..convert import ConvertOptions, cache_key, convert, load_manifest
    from ..demo_model import build_demo_model
    from ..paths import DEMO_MODEL_DIR

    demo = cfg.demo_artifacts or BUILD_DIR / "bench" / "artifacts" / "demo-int8"
    manifest = load_manifest(demo) if (demo / layout.MANIFEST_FILE).is_file() else None
    stale = False
    if manifest is not None and not cfg.demo_artifacts and cfg.measure_demo_agreement:
        # Converted from another demo model, with other quantization settings or by another tool version?
        build_demo_model(DEMO_MODEL_DIR)
        expected = ConvertOptions(model=str(DEMO_MODEL_DIR), output=demo, formats=("onnx", "int8"),
                                  int8_min_agreement=0.0)
        stale = manifest.get("cache_key") != cache_key(expected)
    if (manifest is None or stale or "int8" not in manifest.get("parity", {})) and cfg.measure_demo_agreement:
        logger.info("bench: measuring int8 label agreement on the demo model (%s)", demo)
        build_demo_model(DEMO_MODEL_DIR)
        manifest = convert(ConvertOptions(model=str(DEMO_MODEL_DIR), output=demo, formats=("onnx", "int8"),
                                          int8_min_agreement=0.0))
    if manifest is None or "int8" not in manifest.get("parity", {}):
        return {"allowed": False, "label_agreement": None, "threshold": cfg.int8_min_agreement,
                "reason": f"demo-model int8 agreement not measured ({demo} missing; --tiny does not build it): fp32"}
    rep = manifest["parity"]["int8"]
    agree = float(rep["label_agreement"])
    allowed = agree >= cfg.int8_min_agreement
    return {"allowed": allowed, "label_agreement": agree, "texts": rep.get("texts"),
            "disagreements": rep.get("disagreements", [])[:10], "threshold": cfg.int8_min_agreement,
            "source": str(demo / layout.MANIFEST_FILE),
            "reason": (f"int8 agrees with fp32 on {agree:.2%} of {rep.get('texts')} demo-model texts "
                       f"({'>=' if allowed else '<'} {cfg.int8_min_agreement:.0%}): "
                       f"{'int8 allowed' if allowed else 'fp32 is the default'}")}


class Server:
    """A running server (Triton or Flask) with a monitor over its process tree."""

    def __init__(self, kind: str, proc: subprocess.Popen[bytes] | None, url: str, triton: Any = None) -> None:
        self.kind, self.proc, self.url, self.triton = kind, proc, url, triton

    @property
    def pid(self) -> int:
        return self.triton.proc.pid if self.triton else self.proc.pid  # type: ignore[union-attr]

    def classifier_counts(self) -> tuple[int, int] | None:
        if not self.triton:
            return None
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        try:
            stats = client.get_inference_statistics(layout.MODELS.classifier, as_json=True)["model_stats"][0]
        finally:
            client.close()
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    def stop(self) -> None:
        if self.triton:
            self.triton.stop()
        elif self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_triton(repo: Path, log: Path, ready_timeout: float) -> Server:
    from ..serve import TritonServer

    http, grpc, metrics = free_ports(3)
    s = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, log_file=log)
    t0 = time.monotonic()
    s.start(ready_timeout=ready_timeout)
    logger.info("bench: tritonserver ready in %.1f s (%s)", time.monotonic() - t0, repo.name)
    return Server("triton", None, s.grpc_url, s)


def start_flask(model_dir: Path, log: Path, ready_timeout: float) -> Server:
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tritonfleet.bench.flask_app", "--model", str(model_dir),
                                 "--port", str(port)], stdout=fh, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Flask server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return Server("flask", proc, f"127.0.0.1:{port}")
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"the Flask server was not ready within {ready_timeout:.0f} s; see {log}")


class Harness:
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
        c = self.cfg
        w = self.load(server, mode, c.users, c.duration, c.warmup, pa_warmup=True)
        sweep = [self.load(server, mode, u, c.sweep_duration, c.sweep_warmup) for u in c.sweep]
        peak = max([w["server_peak_rss_mb"], *(p["server_peak_rss_mb"] for p in sweep)])
        return {"w200": w, "sweep": sweep, "server_peak_rss_mb": peak}

    # --- setups --------------------------------------------------------------------------------------
    def build_repo(self, name: str, **kw: Any) -> Path:
        from ..repo import RepoOptions, build_repository

        repo = self.out / "repos" / name
        opts = RepoOptions(**kw)
        build_repository(self.artifacts, repo, opts)
        return repo

    def setup_a(self) -> dict[str, Any]:
        logger.info("bench: setup A (Flask + PyTorch eager)")
        srv = start_flask(self.model_dir, self.out / "logs" / "flask-A.log", self.cfg.ready_timeout)
        try:
            res = self.measure_setup(srv, "http-text")
        finally:
            srv.stop()
        res["config"] = {"server": "flask dev server, app.run(threaded=True)", "model": "PyTorch eager (fp32)",
                         "torch_threads": "default", "tokenization": "per request, server side"}
        return res

    def setup_b(self) -> dict[str, Any]:
        logger.info("bench: setup B (Triton, TorchScript, max_batch_size 1)")
        opts = {"backend": "python", "runner_format": "torchscript", "max_batch_size": 1, "instance_count": 1}
        repo = self.build_repo("B", **opts)
        srv = start_triton(repo, self.out / "logs" / "tritonserver-B.log", self.cfg.ready_timeout)
        mode = "perf_analyzer" if self.pa else "grpc-tensor"
        try:
            res = self.measure_setup(srv, mode)
        finally:
            srv.stop()
        res["config"] = {**opts, "build_repo": "--backend python --format torchscript --max-batch-size 1",
                         "load_generator": mode, "input_data": "real tokenized texts (per-entry shapes)"}
        return res

    def runtime_check(self) -> dict[str, Any]:
        """Which ONNX Runtime variant is fastest here: offline, 32 sorted texts (fp32 2, int8 1 per run) x threads."""
        c = self.cfg
        formats = ["onnx", "int8"]
        variants = [{"threads": 2, "inter_op": 1, "execution_mode": "sequential"}]
        if not c.tiny:
            variants += [{"threads": 1, "inter_op": 2, "execution_mode": "parallel"},
                         {"threads": 1, "inter_op": 1, "execution_mode": "sequential"}]
        rows = []
        for fmt in formats:
            # Sorted by length, a few texts per run: how C serves on CPUs (int8: one per run, see default_candidates).
            plan = f"{8 if c.tiny else 32}x{served_rows_per_run(fmt, 2)}"
            for v in variants:
                r = self.offline(fmt, [], c.runtime_check_duration, sorted_batches=[plan], **v)
                rows.append({"format": fmt, **v, "batches": plan, "throughput": r["best"]["throughput"]})
                logger.info("bench:   runtime %s %s: %.1f texts/s", fmt, v, rows[-1]["throughput"])
        allowed = [r for r in rows if r["format"] == "onnx" or self.int8["allowed"]]
        # The python runner runs sequential sessions (inter_op 1): choose among those for serving.
        servable = [r for r in allowed if r["execution_mode"] == "sequential"]
        best = max(servable, key=lambda r: r["throughput"])
        fastest_any = max(rows, key=lambda r: r["throughput"])
        return {"measurements": rows, "chosen": best, "fastest_overall": fastest_any,
                "note": "serving uses intra-op threads with inter_op 1 (the python runner's session options)"}

    def offline_cmd(self, fmt: str, batch_sizes: list[Any], sorted_batches: list[str], duration: float,
                    threads: int, inter_op: int = 1, execution_mode: str = "sequential") -> list[str]:
        """The command line of one `tritonfleet.bench.offline` process on this run's artifacts and texts."""
        from ..convert import load_manifest

        m = load_manifest(self.artifacts)
        return [sys.executable, "-m", "tritonfleet.bench.offline",
                "--model-file", str(self.artifacts / layout.FORMAT_FILES[fmt]),
                "--tokenizer-file", str(self.artifacts / layout.TOKENIZER_DIR / "tokenizer.json"),
                "--texts", str(self.out / "texts.json"), "--batch-sizes", ",".join(map(str, batch_sizes)),
                "--sorted-batches", ",".join(sorted_batches), "--duration", str(duration), "--threads", str(threads),
                "--inter-op", str(inter_op), "--execution-mode", execution_mode,
                "--max-length", str(m["max_length"]), "--pad-id", str(m["pad_token_id"])]

    def offline(self, fmt: str, batch_sizes: list[int], duration: float, threads: int = 2, inter_op: int = 1,
                execution_mode: str = "sequential", sorted_batches: list[str] | None = None) -> dict[str, Any]:
        sorted_batches = sorted_batches or []
        return run_json(self.offline_cmd(fmt, batch_sizes, sorted_batches, duration, threads, inter_op,
                                         execution_mode),
                        timeout=600 + duration * (len(batch_sizes) + len(sorted_batches)))

    def offline_parallel(self, fmt: str, plans: list[str], duration: float, processes: int) -> list[dict[str, Any]]:
        """`processes` one-thread sessions in as many processes, measuring each plan in the same windows; the rows
        carry the summed texts/s. Plans: "B" (batch B in one run) or "BxS" (sorted, S texts per run)."""
        batch_sizes = [p for p in plans if "x" not in p]
        sorted_plans = [p for p in plans if "x" in p]
        start_at = time.time() + self.cfg.offline_parallel_start_delay  # time to load the sessions, side by side
        cmd = self.offline_cmd(fmt, batch_sizes, sorted_plans, duration, threads=1) + ["--start-at", f"{start_at:.3f}"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
                 for _ in range(processes)]
        outs = [p.communicate(timeout=600 + (duration + 5) * len(plans)) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            if p.returncode != 0:
                raise RuntimeError(f"offline ({processes} processes) failed ({p.returncode}): {err.strip()[-2000:]}")
        reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
        rows = []
        for k in range(len(plans)):
            parts = [r["batch_sizes"][k] for r in reports]
            rows.append({"batch_size": parts[0]["batch_size"], "sub_batch_size": parts[0]["sub_batch_size"],
                         "processes": processes, "threads": 1,
                         "throughput": round(sum(x["throughput"] for x in parts), 2),
                         "model_only_throughput": round(sum(x["model_only_throughput"] for x in parts), 2),
                         "batch_latency_ms": round(sum(x["batch_latency_ms"] for x in parts) / processes, 1),
                         "per_process": [x["throughput"] for x in parts],
                         "peak_rss_mb": round(sum(r["peak_rss_mb"] for r in reports), 1)})
        return rows

    def setup_d(self, runtime: dict[str, Any]) -> dict[str, Any]:
        """The raw limit: one session with the chosen threads, and N one-thread sessions side by side (as C's N
        instances), over batch sizes and sorted sub-batches. The best of all is D."""
        c = self.cfg
        fmt = runtime["format"]
        logger.info("bench: setup D (offline %s)", fmt)
        self.loads.append(loadavg())
        machine = MachineMonitor().start()
        r = self.offline(fmt, c.offline_batch_sizes, c.offline_duration, runtime["threads"], 1, "sequential",
                         c.offline_sorted_batches)
        rows = [{**row, "processes": 1, "threads": runtime["threads"], "peak_rss_mb": r["peak_rss_mb"]}
                for row in r["batch_sizes"]]
        if c.offline_processes > 1 and c.offline_parallel_plans:
            rows += self.offline_parallel(fmt, c.offline_parallel_plans, c.offline_duration, c.offline_processes)
        foreign = machine.stop()
        self.foreign.append(foreign["foreign_cpu_cores"])
        for row in rows:
            rows_per_run = row["sub_batch_size"] or row["batch_size"]
            row["batch_invariant"] = rows_per_run <= served_rows_per_run(fmt, rows_per_run)
            logger.info("bench:   %d process(es) x %d thread(s), batch %d (sub-batch %d): %.1f texts/s",
                        row["processes"], row["threads"], row["batch_size"], row["sub_batch_size"], row["throughput"])
        best = max(rows, key=lambda x: x["throughput"])
        invariant = max((x for x in rows if x["batch_invariant"]), key=lambda x: x["throughput"])
        w = {"throughput": best["throughput"], "batch_size": best["batch_size"], "errors": 0,
             "sub_batch_size": best["sub_batch_size"], "processes": best["processes"], "threads": best["threads"],
             "p50_ms": None, "p95_ms": None, "p99_ms": None, "batch_latency_ms": best["batch_latency_ms"],
             "model_only_throughput": best["model_only_throughput"], "avg_batch_size": best["batch_size"],
             "server_peak_rss_mb": best["peak_rss_mb"], "loadavg_1m": self.loads[-1], **foreign,
             # For int8, the best plan that gives every text its own scores (one text per run), as C serves it.
             "batch_invariant_throughput": invariant["throughput"]}
        return {"w200": w, "batch_search": rows, "sweep": [], "server_peak_rss_mb": best["peak_rss_mb"],
                "config": {"format": fmt, "best": {k: best[k] for k in ("processes", "threads", "batch_size",
                                                                          "sub_batch_size")},
                           "inter_op_threads": 1, "tokenization": "included (batched fast tokenizer)"}}

    def c_options(self, fmt: str, cand: dict[str, Any]) -> dict[str, Any]:
        sub_batch = served_rows_per_run(fmt, cand.get("sub_batch_size", 0))
        return {"backend": "python", "runner_format": fmt, "max_batch_size": cand.get("max_batch_size", 64),
                "instance_count": cand.get("instance_count", 1), "threads": cand.get("threads", 2),
                "max_queue_delay_us": cand.get("max_queue_delay_us", 5000),
                "preferred_batch_sizes": cand.get("preferred_batch_sizes", []),
                "tokenizer_instance_count": cand.get("tokenizer_instance_count", 1),
                "sub_batch_size": sub_batch}

    def tune_c(self, fmt: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        c = self.cfg
        cands = c.candidates or default_candidates(fmt=fmt)
        if not c.tune:
            return cands[0], []
        rows = []
        for i, cand in enumerate(cands):
            opts = self.c_options(fmt, cand)
            logger.info("bench: setup C tuning %d/%d: %s", i + 1, len(cands), cand)
            repo = self.build_repo(f"C-tune-{i}", **opts)
            srv = start_triton(repo, self.out / "logs" / f"tritonserver-C-tune-{i}.log", c.ready_timeout)
            try:
                r = self.load(srv, "grpc-text", c.users, c.tune_duration, c.tune_warmup)
            finally:
                srv.stop()
            rows.append({"candidate": cand, "throughput": r["throughput"], "p99_ms": r["p99_ms"],
                         "errors": r["errors"], "avg_batch_size": r.get("avg_batch_size"),
                         "loadavg_1m": r["loadavg_1m"]})
        return choose_candidate(rows)["candidate"], rows

    def setup_c(self, runtime: dict[str, Any]) -> dict[str, Any]:
        logger.info("bench: setup C (Triton ensemble, %s)", runtime["format"])
        chosen, search = self.tune_c(runtime["format"])
        opts = self.c_options(runtime["format"], chosen)
        repo = self.build_repo("C", **opts)
        srv = start_triton(repo, self.out / "logs" / "tritonserver-C.log", self.cfg.ready_timeout)
        try:
            res = self.measure_setup(srv, "grpc-text")
        finally:
            srv.stop()
        flags = (f"--backend python --format {opts['runner_format']} --max-batch-size {opts['max_batch_size']} "
                 f"--instance-count {opts['instance_count']} --threads {opts['threads']} "
                 f"--max-queue-delay-us {opts['max_queue_delay_us']}"
                 + (f" --preferred-batch-sizes {','.join(map(str, opts['preferred_batch_sizes']))}"
                    if opts["preferred_batch_sizes"] else "")
                 + f" --tokenizer-instance-count {opts['tokenizer_instance_count']}"
                 + f" --sub-batch-size {opts['sub_batch_size']}")
        res["config"] = {**opts, "build_repo": flags}
        res["tuning"] = {"candidates": search, "chosen": chosen, "rule": CHOICE_RULE}
        return res

    def setup_g(self) -> dict[str, Any]:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("--gpu: no CUDA device visible to torch here (this needs a GPU host with CUDA torch)")
        logger.info("bench: setup G (Triton ensemble, TorchScript fp16 on KIND_GPU)")
        opts = {"backend": "python", "runner_format": "torchscript", "instance_kind": "KIND_GPU", "fp16": True,
                "max_batch_size": 64, "max_queue_delay_us": 2000, "instance_count": 1}
        repo = self.build_repo("G", **opts)
        srv = start_triton(repo, self.out / "logs" / "tritonserver-G.log", self.cfg.ready_timeout)
        try:
            res = self.measure_setup(srv, "grpc-text")
        finally:
            srv.stop()
        res["config"] = {**opts, "build_repo": "--backend python --format torchscript --instance-kind KIND_GPU "
                                               "--fp16 --max-batch-size 64 --max-queue-delay-us 2000"}
        return res

    # --- the run -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        c = self.cfg
        t_start = time.time()
        self.loads.append(loadavg())
        self.model_dir, self.artifacts = prepare_artifacts(c)
        from ..convert import load_manifest

        manifest = load_manifest(self.artifacts)
        tok_file = self.artifacts / layout.TOKENIZER_DIR / "tokenizer.json"
        texts = workload.make_texts(tok_file, c.texts)
        lengths = workload.token_lengths(tok_file, texts, manifest["max_length"])
        workload.write_json(self.out / "texts.json", {"texts": texts})
        workload.write_json(self.out / "tensor_data.json",
                            workload.tensor_data(tok_file, texts, manifest["max_length"]))
        self.int8 = int8_policy(c)
        logger.info("bench: int8 policy: %s", self.int8["reason"])
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
            "int8_policy": self.int8, "setups": {}, "errors": {},
        }
        if self.pa is None and "B" in c.setups:
            logger.warning("bench: perf_analyzer not found (scripts/bench.sh installs it); setup B uses the "
                           "asyncio gRPC tensor client instead")
        runtime = None
        if c.runtime:
            runtime = {"format": c.runtime, "threads": 2, "inter_op": 1, "execution_mode": "sequential"}
            report["runtime_selection"] = {"chosen": runtime, "note": "forced with --runtime (not measured)"}
        elif "C" in c.setups or "D" in c.setups:
            rc = self.runtime_check()
            report["runtime_selection"] = rc
            runtime = rc["chosen"]
            logger.info("bench: runtime chosen: %s", runtime)
        plan = [("D", lambda: self.setup_d(runtime)), ("C", lambda: self.setup_c(runtime)),
                ("B", self.setup_b), ("A", self.setup_a)]
        if c.gpu:
            plan.append(("G", self.setup_g))
        for name, fn in plan:
            if name not in c.setups and not (name == "G" and c.gpu):
                continue
            try:
                res = fn()
            except Exception as exc:  # noqa: BLE001 - one failed setup must not lose the others' figures
                logger.exception("bench: setup %s failed", name)
                report["errors"][name] = " ".join(str(exc).split())[:2000]
                continue
            res["description"] = DESCRIPTIONS[name]
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
    def w(name: str) -> dict[str, Any] | None:
        return setups.get(name, {}).get("w200")

    a, b, c, d = w("A"), w("B"), w("C"), w("D")
    out: dict[str, Any] = {}

    def ratio(x: dict[str, Any] | None, y: dict[str, Any] | None) -> float | None:
        if not x or not y or not y.get("throughput"):
            return None
        return round(x["throughput"] / y["throughput"], 3)

    for key, other, target in (("C_vs_A_throughput", a, TARGETS["C_vs_A_throughput_min"]),
                               ("C_vs_B_throughput", b, TARGETS["C_vs_B_throughput_min"]),
                               ("C_vs_D_throughput", d, TARGETS["C_vs_D_throughput_min"])):
        r = ratio(c, other)
        out[key] = {"value": r, "target": f">= {target}", "pass": None if r is None else r >= target}
    p99 = c.get("p99_ms") if c else None
    out["C_p99_ms"] = {"value": p99, "target": f"<= {TARGETS['C_p99_ms_max']}",
                       "pass": None if p99 is None else p99 <= TARGETS["C_p99_ms_max"]}
    errs = c.get("errors") if c else None
    out["C_errors"] = {"value": errs, "target": "== 0", "pass": None if errs is None else errs == 0}
    verdicts = [v["pass"] for v in out.values()]
    out["all_pass"] = all(v is True for v in verdicts)
    # Not a target: C against D's best plan that gives every text its own scores (one text per run for int8),
    # which is how C serves int8. D's overall best may batch int8 texts together (scores then depend on batching).
    inv = d.get("batch_invariant_throughput") if d else None
    out["info_C_vs_D_same_semantics"] = {
        "value": round(c["throughput"] / inv, 3) if c and inv else None,
        "note": "C / D's best one-text-per-run plan (informational, not a target)"}
    return out


def summary(report: dict[str, Any]) -> list[str]:
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
