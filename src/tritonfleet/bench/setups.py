"""The setups the benchmark compares, and setup C's candidates.

A  Flask dev server (threaded), PyTorch eager, tokenizing per request          HTTP, raw text, asyncio client
B  Triton, TorchScript via the python-backend runner, max_batch_size 1          gRPC, token ids, perf_analyzer
C  Triton, this project's default: ensemble (server-side tokenization),         gRPC, raw text, asyncio client
   dynamic batching, runtime + instance settings chosen by measurement
D  the same runtime and model in-process (onnxruntime), best batch size         no server
R  Ray Serve (the framework a user would pick instead): @serve.batch, C's      HTTP, raw text, asyncio client
   model file, format, sub-batches and CPU budget
(G, opt-in with --gpu: C's pipeline with the TorchScript runner on KIND_GPU in fp16, for a GPU host.)

Every served setup is a `release.ModelOptions`: C's candidates are dicts of its field names, and the
`build_repo` flags in the report are `to_cli_args(SERVE)` of the options served, so they reproduce it exactly.
Each setup is a function of the `Harness` (which loads servers and measures them).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import layout
from ..convert import load_manifest
from ..release import SERVE, ModelOptions
from .artifacts import CONVERSION, allowed_formats
from .procmon import MachineMonitor, loadavg
from .scoring import CHOICE_RULE, choose_candidate
from .servers import run_json, start_flask, start_ray, start_triton, subprocess_env

if TYPE_CHECKING:
    from .runner import Harness

logger = logging.getLogger(__name__)

SETUPS = ("A", "B", "C", "D", "R")
DESCRIPTIONS = {
    "A": "Flask dev server (app.run(threaded=True), one process), PyTorch eager, tokenizing per request; HTTP",
    "B": "Triton, TorchScript (python-backend runner on CPU), max_batch_size 1, client-side tokenization; gRPC "
         f"tensor interface ({layout.MODELS.classifier} {layout.INPUT_IDS}/{layout.ATTENTION_MASK})",
    "C": f"Triton, ensemble '{layout.MODELS.ensemble}' (server-side tokenization), dynamic batching, ONNX Runtime "
         "via the python-backend runner, settings chosen by measurement; gRPC raw text",
    "D": "the same ONNX Runtime session and model in-process, no server, best batch size (tokenization included)",
    "G": "Triton, ensemble, TorchScript runner on KIND_GPU in fp16 (python backend); gRPC raw text",
    "R": "Ray Serve (peer): @serve.batch dynamic batching, C's ONNX Runtime model, format, sub-batches and CPU "
         "budget (replicas x threads), raw text in, label out; HTTP",
}

#: What every candidate of C starts from (besides the served format): the python runner with 2 intra-op threads
#: (the 2 cores) and a 5 ms queue delay. A candidate overrides any of it.
C_BASE: dict[str, Any] = {"backend": "python", "threads": 2, "max_queue_delay_us": 5000, "preprocessing": "python"}
B_OPTIONS: dict[str, Any] = {"backend": "python", "format": "torchscript", "max_batch_size": 1, "instance_count": 1}
G_OPTIONS: dict[str, Any] = {"backend": "python", "format": "torchscript", "instance_kind": "KIND_GPU", "fp16": True,
                             "max_batch_size": 64, "max_queue_delay_us": 2000, "instance_count": 1}


def default_candidates(max_batch_size: int = 64, fmt: str = "onnx") -> list[dict[str, Any]]:
    """The short search over server settings for setup C (threads x instances <= the 2 cores).

    On 2 CPU cores padding short texts to a long one costs more than batching gains, so most candidates sort
    each dynamic batch by length and run it a few texts at a time (sub_batch_size); one candidate runs the
    whole batch at once, the GPU-style setting, for comparison. The int8 model is always served one row per run
    (its dynamic quantization would otherwise make a text's scores depend on its neighbours), so its candidates
    vary the instances, threads and queue delay instead. int8-static (fixed, calibrated scales) is batch-invariant
    and gets fp32's sorted sub-batch candidates.
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


def c_candidates(runtime_format: str, allowed: list[str], native_ok: bool = False,
                 max_batch_size: int = 64) -> list[dict[str, Any]]:
    """Setup C's default search: the chosen runtime's candidates; where native preprocessing passed parity, the
    two first of them with it; then the two first candidates of every other allowed int8 format (named with
    `format`), so that the server-level measurement can prefer either."""
    cands = default_candidates(max_batch_size, runtime_format)
    if native_ok:
        cands += [{**c, "preprocessing": "native"} for c in cands[:2]]
    for fmt in allowed:
        if fmt != runtime_format and fmt in layout.QUANTIZED_FORMATS:
            cands += [{**c, "format": fmt} for c in default_candidates(max_batch_size, fmt)[:2]]
    return cands


def native_passed(h: Harness) -> bool:
    """Whether this run's model passed native preprocessing parity in its conversion (its manifest says)."""
    return bool((load_manifest(h.artifacts)["parity"].get("native") or {}).get("passed"))


def served_rows_per_run(fmt: str, wanted: int) -> int:
    """Rows per run the python runner may use for `fmt`: the options' own rule (int8: 1), else `wanted`."""
    return ModelOptions(format=fmt, formats=CONVERSION.formats).effective_sub_batch_size() or wanted


def serving_options(overrides: Mapping[str, Any], where: str) -> ModelOptions:
    """Options of a served setup: the benchmark's conversion (which the artifacts have) with `overrides`."""
    return ModelOptions.from_dict({"formats": CONVERSION.formats, **overrides}, where)


def candidate_options(fmt: str, candidate: Mapping[str, Any]) -> ModelOptions:
    """The options setup C serves for `candidate` (ModelOptions field names over C_BASE) with the `fmt` runtime.
    Its sub_batch_size is what the runner may use (int8 runs one text per run whatever the candidate asks)."""
    merged = {**C_BASE, "format": fmt, **candidate}
    merged["sub_batch_size"] = served_rows_per_run(str(merged["format"]), merged.get("sub_batch_size") or 0)
    return serving_options(merged, f"setup C candidate {dict(candidate)}")


def options_report(opts: ModelOptions) -> dict[str, Any]:
    """A served setup's `config` in the report: its serving options and the build-repo flags that give them."""
    return {**opts.stage(SERVE), "build_repo": " ".join(opts.to_cli_args(SERVE))}


# --- A, B: the article's setups ------------------------------------------------------------------------------

def setup_a(h: Harness) -> dict[str, Any]:
    logger.info("bench: setup A (Flask + PyTorch eager)")
    srv = start_flask(h.model_dir, h.out / "logs" / "flask-A.log", h.cfg.ready_timeout)
    try:
        res = h.measure_setup(srv, "http-text")
    finally:
        srv.stop()
    res["config"] = {"server": "flask dev server, app.run(threaded=True)", "model": "PyTorch eager (fp32)",
                     "torch_threads": "default", "tokenization": "per request, server side"}
    return res


def setup_b(h: Harness) -> dict[str, Any]:
    logger.info("bench: setup B (Triton, TorchScript, max_batch_size 1)")
    opts = serving_options(B_OPTIONS, "setup B")
    repo = h.build_repo("B", opts)
    srv = start_triton(repo, h.out / "logs" / "tritonserver-B.log", h.cfg.ready_timeout)
    mode = "perf_analyzer" if h.pa else "grpc-tensor"
    try:
        res = h.measure_setup(srv, mode)
    finally:
        srv.stop()
    res["config"] = {**options_report(opts), "load_generator": mode,
                     "input_data": "real tokenized texts (per-entry shapes)"}
    return res


# --- D: the runtime offline, and the runtime check ---------------------------------------------------------

def offline_cmd(h: Harness, fmt: str, batch_sizes: list[Any], sorted_batches: list[str], duration: float,
                threads: int, inter_op: int = 1, execution_mode: str = "sequential") -> list[str]:
    """The command line of one `tritonfleet.bench.offline` process on this run's artifacts and texts."""
    m = load_manifest(h.artifacts)
    return [sys.executable, "-m", "tritonfleet.bench.offline",
            "--model-file", str(h.artifacts / layout.FORMAT_FILES[fmt]),
            "--tokenizer-file", str(h.artifacts / layout.TOKENIZER_DIR / "tokenizer.json"),
            "--texts", str(h.out / "texts.json"), "--batch-sizes", ",".join(map(str, batch_sizes)),
            "--sorted-batches", ",".join(sorted_batches), "--duration", str(duration), "--threads", str(threads),
            "--inter-op", str(inter_op), "--execution-mode", execution_mode,
            "--max-length", str(m["max_length"]), "--pad-id", str(m["pad_token_id"])]


def offline(h: Harness, fmt: str, batch_sizes: list[int], duration: float, threads: int = 2, inter_op: int = 1,
            execution_mode: str = "sequential", sorted_batches: list[str] | None = None) -> dict[str, Any]:
    sorted_batches = sorted_batches or []
    return run_json(offline_cmd(h, fmt, batch_sizes, sorted_batches, duration, threads, inter_op, execution_mode),
                    timeout=600 + duration * (len(batch_sizes) + len(sorted_batches)))


def offline_parallel(h: Harness, fmt: str, plans: list[str], duration: float,
                     processes: int) -> list[dict[str, Any]]:
    """`processes` one-thread sessions in as many processes, measuring each plan in the same windows; the rows
    carry the summed texts/s. Plans: "B" (batch B in one run) or "BxS" (sorted, S texts per run)."""
    batch_sizes = [p for p in plans if "x" not in p]
    sorted_plans = [p for p in plans if "x" in p]
    start_at = time.time() + h.cfg.offline_parallel_start_delay  # time to load the sessions, side by side
    cmd = offline_cmd(h, fmt, batch_sizes, sorted_plans, duration, threads=1) + ["--start-at", f"{start_at:.3f}"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
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


def runtime_check(h: Harness) -> dict[str, Any]:
    """Which ONNX Runtime variant is fastest here: offline, 32 sorted texts (fp32 and int8-static 2, int8 1 per
    run) x threads. Every format is measured; the choice is among those the int8 policy allows."""
    c = h.cfg
    formats = ["onnx", *layout.QUANTIZED_FORMATS]
    variants = [{"threads": 2, "inter_op": 1, "execution_mode": "sequential"}]
    if not c.tiny:
        variants += [{"threads": 1, "inter_op": 2, "execution_mode": "parallel"},
                     {"threads": 1, "inter_op": 1, "execution_mode": "sequential"}]
    rows = []
    for fmt in formats:
        # Sorted by length, a few texts per run: how C serves on CPUs (int8: one per run, see default_candidates).
        plan = f"{8 if c.tiny else 32}x{served_rows_per_run(fmt, 2)}"
        for v in variants:
            r = offline(h, fmt, [], c.runtime_check_duration, sorted_batches=[plan], **v)
            rows.append({"format": fmt, **v, "batches": plan, "throughput": r["best"]["throughput"]})
            logger.info("bench:   runtime %s %s: %.1f texts/s", fmt, v, rows[-1]["throughput"])
    allowed = [r for r in rows if r["format"] in allowed_formats(h.int8)]
    # The python runner runs sequential sessions (inter_op 1): choose among those for serving.
    servable = [r for r in allowed if r["execution_mode"] == "sequential"]
    best = max(servable, key=lambda r: r["throughput"])
    fastest_any = max(rows, key=lambda r: r["throughput"])
    return {"measurements": rows, "chosen": best, "fastest_overall": fastest_any,
            "note": "serving uses intra-op threads with inter_op 1 (the python runner's session options)"}


def setup_d(h: Harness, runtime: dict[str, Any]) -> dict[str, Any]:
    """The raw limit: one session with the chosen threads, and N one-thread sessions side by side (as C's N
    instances), over batch sizes and sorted sub-batches. The best of all is D. When int8-static is allowed and is
    not the chosen runtime, D measures its plans too (C's candidates include it)."""
    c = h.cfg
    formats = [runtime["format"]]
    if "int8-static" in allowed_formats(h.int8) and "int8-static" not in formats:
        formats.append("int8-static")
    logger.info("bench: setup D (offline %s)", ", ".join(formats))
    h.loads.append(loadavg())
    machine = MachineMonitor().start()
    rows = []
    for fmt in formats:
        r = offline(h, fmt, c.offline_batch_sizes, c.offline_duration, runtime["threads"], 1, "sequential",
                    c.offline_sorted_batches)
        rows += [{**row, "format": fmt, "processes": 1, "threads": runtime["threads"],
                  "peak_rss_mb": r["peak_rss_mb"]} for row in r["batch_sizes"]]
        if c.offline_processes > 1 and c.offline_parallel_plans:
            rows += [{**row, "format": fmt}
                     for row in offline_parallel(h, fmt, c.offline_parallel_plans, c.offline_duration,
                                                 c.offline_processes)]
    foreign = machine.stop()
    h.foreign.append(foreign["foreign_cpu_cores"])
    for row in rows:
        rows_per_run = row["sub_batch_size"] or row["batch_size"]
        row["batch_invariant"] = rows_per_run <= served_rows_per_run(row["format"], rows_per_run)
        logger.info("bench:   %s %d process(es) x %d thread(s), batch %d (sub-batch %d): %.1f texts/s", row["format"],
                    row["processes"], row["threads"], row["batch_size"], row["sub_batch_size"], row["throughput"])
    best = max(rows, key=lambda x: x["throughput"])
    invariant = max((x for x in rows if x["batch_invariant"]), key=lambda x: x["throughput"])
    w = {"throughput": best["throughput"], "batch_size": best["batch_size"], "errors": 0,
         "sub_batch_size": best["sub_batch_size"], "processes": best["processes"], "threads": best["threads"],
         "format": best["format"],
         "p50_ms": None, "p95_ms": None, "p99_ms": None, "batch_latency_ms": best["batch_latency_ms"],
         "model_only_throughput": best["model_only_throughput"], "avg_batch_size": best["batch_size"],
         "server_peak_rss_mb": best["peak_rss_mb"], "loadavg_1m": h.loads[-1], **foreign,
         # The best plan that gives every text its own scores whatever it is batched with (dynamic int8: one text
         # per run; fp32 and int8-static: any plan), as C serves them.
         "batch_invariant_throughput": invariant["throughput"],
         "batch_invariant_plan": {k: invariant[k] for k in ("format", "processes", "threads", "batch_size",
                                                            "sub_batch_size")}}
    return {"w200": w, "batch_search": rows, "sweep": [], "server_peak_rss_mb": best["peak_rss_mb"],
            "config": {"formats": formats, "best": {k: best[k] for k in ("format", "processes", "threads",
                                                                           "batch_size", "sub_batch_size")},
                       "inter_op_threads": 1, "tokenization": "included (batched fast tokenizer)"}}


# --- C: this project's setup, chosen by measurement; G: the same on a GPU ---------------------------------

def tune_c(h: Harness, fmt: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure each candidate briefly and choose one (CHOICE_RULE); without tuning, the first candidate."""
    c = h.cfg
    allowed = allowed_formats(h.int8)
    native_ok = native_passed(h)
    cands = c.candidates or c_candidates(fmt, allowed, native_ok)
    refused = [cand for cand in cands if cand.get("format", fmt) not in allowed
               or (cand.get("preprocessing") == "native" and not native_ok)]
    for cand in refused:
        logger.warning("bench: setup C candidate %s skipped: the int8 policy does not allow its format, or native "
                       "preprocessing failed parity for this model", cand)
    cands = [cand for cand in cands if cand not in refused]
    if not c.tune:
        return cands[0], []
    rows = []
    for i, cand in enumerate(cands):
        opts = candidate_options(fmt, cand)
        logger.info("bench: setup C tuning %d/%d: %s", i + 1, len(cands), cand)
        repo = h.build_repo(f"C-tune-{i}", opts)
        srv = start_triton(repo, h.out / "logs" / f"tritonserver-C-tune-{i}.log", c.ready_timeout)
        try:
            r = h.load(srv, "grpc-text", c.users, c.tune_duration, c.tune_warmup)
        finally:
            srv.stop()
        rows.append({"candidate": cand, "throughput": r["throughput"], "p99_ms": r["p99_ms"],
                     "errors": r["errors"], "avg_batch_size": r.get("avg_batch_size"),
                     "loadavg_1m": r["loadavg_1m"]})
    return choose_candidate(rows)["candidate"], rows


def setup_c(h: Harness, runtime: dict[str, Any]) -> dict[str, Any]:
    logger.info("bench: setup C (Triton ensemble, %s)", runtime["format"])
    chosen, search = tune_c(h, runtime["format"])
    opts = candidate_options(runtime["format"], chosen)
    h.c_options = opts
    repo = h.build_repo("C", opts)
    srv = start_triton(repo, h.out / "logs" / "tritonserver-C.log", h.cfg.ready_timeout)
    try:
        res = h.measure_setup(srv, "grpc-text")
    finally:
        srv.stop()
    res["config"] = options_report(opts)
    res["tuning"] = {"candidates": search, "chosen": chosen, "rule": CHOICE_RULE}
    return res


def setup_g(h: Harness) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("--gpu: no CUDA device visible to torch here (this needs a GPU host with CUDA torch)")
    logger.info("bench: setup G (Triton ensemble, TorchScript fp16 on KIND_GPU)")
    opts = serving_options(G_OPTIONS, "setup G")
    repo = h.build_repo("G", opts)
    srv = start_triton(repo, h.out / "logs" / "tritonserver-G.log", h.cfg.ready_timeout)
    try:
        res = h.measure_setup(srv, "grpc-text")
    finally:
        srv.stop()
    res["config"] = options_report(opts)
    return res


# --- R: the peer a user would pick instead -------------------------------------------------------------------

def peer_config(h: Harness, opts: ModelOptions) -> dict[str, Any]:
    """What setup R serves: C's model file (format), tokenizer, sub-batches and CPU budget (replicas x threads)."""
    m = load_manifest(h.artifacts)
    return {"model_file": str(h.artifacts / layout.FORMAT_FILES[opts.format]),
            "tokenizer_file": str(h.artifacts / layout.TOKENIZER_DIR / "tokenizer.json"),
            "max_length": m["max_length"], "pad_token_id": m["pad_token_id"], "labels": m["labels"],
            "replicas": opts.instance_count, "threads": opts.threads or 1,
            "sub_batch_size": opts.effective_sub_batch_size(), "max_text_bytes": opts.max_text_bytes}


def setup_r(h: Harness, runtime: dict[str, Any]) -> dict[str, Any]:
    """Ray Serve with C's chosen settings (or C's first candidate when C did not run)."""
    from .ray_app import RAY_SETTINGS

    opts = h.c_options or candidate_options(runtime["format"], (h.cfg.candidates or default_candidates(
        fmt=runtime["format"]))[0])
    if opts.format == "torchscript":
        raise RuntimeError("setup R serves C's ONNX model; C serves TorchScript")
    cfg = peer_config(h, opts)
    logger.info("bench: setup R (Ray Serve, %s, %d replica(s) x %d thread(s))", opts.format, cfg["replicas"],
                cfg["threads"])
    srv = start_ray(cfg, h.out / "logs" / "ray-R.log", h.cfg.ready_timeout)
    try:
        res = h.measure_setup(srv, "http-text")
    finally:
        srv.stop()
    res["config"] = {**{k: v for k, v in cfg.items() if k not in ("labels",)}, "format": opts.format,
                     "ray_serve": RAY_SETTINGS, "ray_version": _ray_version(),
                     "as_c": options_report(opts)["build_repo"]}
    return res


def _ray_version() -> str:
    import ray

    return str(ray.__version__)
