"""`tritonfleet bench`: the serving benchmark. `add_parser` is called by tritonfleet.cli."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..layout import QUANTIZED_FORMATS
from ..paths import BUILD_DIR
from ..random_model import PRESETS

if TYPE_CHECKING:
    from .runner import BenchConfig

#: --tiny: a tiny model, seconds per setup. Its C candidates are ModelOptions field names, as every candidate is.
#: The demo model is not built, so the int8 formats are forced on (recorded as forced): the run covers their
#: mechanics (C's search includes an int8-static candidate), not their accuracy. The tiny model is a RoBERTa with a
#: byte-level BPE tokenizer, whose native (C++) tokenizer graph passes parity: C's search includes it too.
TINY = {"preset": "tiny-roberta", "users": 8, "duration": 3.0, "warmup": 1.0, "sweep": [1, 8], "sweep_duration": 2.0,
        "sweep_warmup": 0.5, "tune_duration": 2.0, "tune_warmup": 1.0, "offline_batch_sizes": [1, 8],
        "offline_sorted_batches": ["8x2"], "offline_parallel_plans": ["1", "8x2"], "offline_parallel_start_delay": 3.0,
        "offline_duration": 1.0, "runtime_check_duration": 0.5, "texts": 64,
        "measure_demo_agreement": False, "int8": "on",
        "candidates": [{"instance_count": 1, "threads": 2, "max_queue_delay_us": 5000, "max_batch_size": 64},
                       {"instance_count": 2, "threads": 1, "max_queue_delay_us": 5000, "max_batch_size": 64,
                        "sub_batch_size": 2, "format": "int8-static"},
                       {"instance_count": 1, "threads": 2, "max_queue_delay_us": 5000, "max_batch_size": 64,
                        "sub_batch_size": 2, "preprocessing": "native"}]}


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser(
        "bench", help="serving benchmark: Flask/eager (A), article Triton (B), this project (C), offline (D), "
                      "Ray Serve (R)",
        description="Measures five setups in one run on this machine (W200: 200 closed-loop users, 60 s, after "
                    "warm-up; plus a concurrency sweep) and writes bench.json and bench.png. See docs/BENCHMARK.md.")
    s.add_argument("--tiny", action="store_true", help="tiny model, seconds per setup (tests and CI)")
    s.add_argument("--output", type=Path, default=None, help="results folder (default build/bench/results[-tiny])")
    s.add_argument("--preset", choices=PRESETS, default=None, help="random model size")
    s.add_argument("--model-dir", type=Path, help="Hugging Face model directory (default: a random --preset model)")
    s.add_argument("--artifacts", type=Path, help="conversion artifacts with torchscript, onnx, int8 and int8-static")
    s.add_argument("--setups", default="A,B,C,D,R", help="which setups to run (default A,B,C,D,R)")
    s.add_argument("--users", type=int, help="concurrent users of the main workload (default 200)")
    s.add_argument("--duration", type=float, help="measured seconds of the main workload (default 60)")
    s.add_argument("--warmup", type=float, help="warm-up seconds before measuring (default 10)")
    s.add_argument("--sweep", type=_ints, help="concurrency sweep (default 1,8,32,64,128,200)")
    s.add_argument("--sweep-duration", type=float, help="measured seconds per sweep point (default 15)")
    s.add_argument("--no-tune", action="store_true", help="setup C: no search, use the first candidate")
    s.add_argument("--tune-duration", type=float, help="measured seconds per tuning candidate (default 12)")
    s.add_argument("--candidates", type=json.loads,
                   help='setup C search as JSON: [{"instance_count": 1, "threads": 2, "max_queue_delay_us": 20000}]')
    s.add_argument("--int8", choices=("auto", "on", "off"), default=None,
                   help="auto (default; --tiny: on): each int8 format (int8, int8-static) only if it agrees with fp32 "
                        "on >= 99%% of the demo model's golden and held-out labels; on/off forces both")
    s.add_argument("--runtime", choices=("onnx", *QUANTIZED_FORMATS),
                   help="setups C and D: use this ONNX variant instead of measuring fp32/int8 and thread settings")
    s.add_argument("--offline-batch-sizes", type=_ints, help="setup D batch sizes (default 1,8,16,32,64)")
    s.add_argument("--perf-analyzer", help="perf_analyzer binary (default build/bench/tools/bin/perf_analyzer)")
    s.add_argument("--gpu", action="store_true",
                   help="also run setup G: the python-backend TorchScript runner on KIND_GPU in fp16 (GPU host only)")
    s.add_argument("--timeout", type=float, help="seconds per request before it counts as an error (default 120)")
    s.set_defaults(func=cmd_bench)
    return s


def check_candidates(candidates: Any) -> None:
    """Refuse setup C candidates that are not ModelOptions (unknown names, bad values) before any measurement."""
    from .setups import candidate_options

    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates) or not candidates:
        raise UsageError("--candidates: expected a non-empty JSON list of objects of ModelOptions field names")
    for cand in candidates:
        candidate_options("onnx", cand)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    from .runner import BenchConfig

    kw: dict[str, Any] = dict(TINY) if args.tiny else {}
    kw["tiny"] = bool(args.tiny)
    kw["output"] = args.output or BUILD_DIR / "bench" / ("results-tiny" if args.tiny else "results")
    for name in ("preset", "model_dir", "artifacts", "users", "duration", "warmup", "sweep", "sweep_duration",
                 "tune_duration", "candidates", "offline_batch_sizes", "perf_analyzer", "timeout", "runtime"):
        value = getattr(args, name)
        if value is not None:
            kw[name] = value
    kw["setups"] = [x.strip().upper() for x in args.setups.split(",") if x.strip()]
    kw["tune"] = not args.no_tune
    kw["int8"] = args.int8 or kw.get("int8", "auto")
    kw["gpu"] = args.gpu
    if kw.get("candidates") is not None:
        check_candidates(kw["candidates"])
    return BenchConfig(**kw)


def cmd_bench(args: argparse.Namespace) -> int:
    from .runner import Harness

    cfg = config_from_args(args)
    report = Harness(cfg).run()
    print("\n".join(report["summary"]))
    print(f"results: {report['files']['json']}, {report['files']['png']}"
          + (f"  (PROVISIONAL: other jobs used up to {report['machine']['foreign_cpu_cores_max']} CPU cores "
             "during a measurement, or --tiny)" if report["provisional"] else ""))
    if report["errors"]:
        for name, msg in report["errors"].items():
            print(f"setup {name} FAILED: {msg}", file=sys.stderr)
        return 1
    return 0
