"""The one CLI: `tritonfleet <command>`. Run `tritonfleet <command> --help` for each command's options."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__, layout, paths
from .convert import DEFAULT_MODEL

logger = logging.getLogger("tritonfleet")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


# --- commands -------------------------------------------------------------------------------------------

def cmd_demo_model(args: argparse.Namespace) -> int:
    from .demo_model import DemoModelError, build_demo_model

    try:
        info = build_demo_model(args.output, force=args.force)
    except DemoModelError as exc:
        print(f"demo-model: {exc}", file=sys.stderr)
        return 1
    print(f"demo model: {args.output} (held-out accuracy {info['held_out_accuracy']:.1%} on "
          f"{info['held_out_size']} texts)")
    return 0


def cmd_random_model(args: argparse.Namespace) -> int:
    from .random_model import make_random_model

    make_random_model(args.output, args.preset, args.seed)
    print(f"random {args.preset} model: {args.output} (random weights: for tests and speed benchmarks only)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import ConvertOptions, ParityError, convert

    opts = ConvertOptions(model=args.model, output=args.output, formats=tuple(args.formats),
                          revision=args.revision, max_length=args.max_length, atol=args.atol,
                          int8_min_agreement=args.int8_min_agreement, opset=args.opset,
                          int8_per_channel=not args.int8_per_tensor,
                          trace_shape=(args.trace_batch, args.trace_length))
    try:
        manifest = convert(opts)
    except ParityError as exc:
        print(f"convert: FAILED: {exc}\nconvert: nothing was written to {args.output}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 2
    for fmt, rep in manifest["parity"].items():
        figure = (f"label agreement {rep['label_agreement']:.2%} on {rep['texts']} texts" if fmt == "int8"
                  else f"max |logit diff| {rep['max_abs_logit_diff']:.1e} over {rep['cases']} cases")
        print(f"{fmt:<12} parity OK: {figure}")
    print(f"artifacts: {args.output} (cache key {manifest['cache_key']})")
    return 0


def repo_options(args: argparse.Namespace):  # -> RepoOptions
    from .repo import RepoOptions

    return RepoOptions(
        backend=args.backend, runner_format=args.format, max_batch_size=args.max_batch_size,
        preferred_batch_sizes=args.preferred_batch_sizes, max_queue_delay_us=args.max_queue_delay_us,
        instance_count=args.instance_count, instance_kind=args.instance_kind,
        tokenizer_instance_count=args.tokenizer_instance_count, threads=args.threads,
        sub_batch_size=args.sub_batch_size,
        warmup=not args.no_warmup, max_text_bytes=args.max_text_bytes, tensorrt=args.tensorrt, fp16=args.fp16)


def cmd_build_repo(args: argparse.Namespace) -> int:
    from .repo import build_repository

    try:
        info = build_repository(args.artifacts, args.output, repo_options(args))
    except ValueError as exc:
        print(f"build-repo: {exc}", file=sys.stderr)
        return 2
    print(f"model repository: {args.output} (backend {info['options']['backend']}, "
          f"{info['options']['runner_format']}, checksum {info['checksum']})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServerError, TritonServer

    server = TritonServer(args.repo, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, host=args.host)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start(ready_timeout=args.ready_timeout)
    except ServerError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    print(f"serving {args.repo}: gRPC {server.grpc_url}, HTTP {server.http_url} (Ctrl-C stops)", flush=True)
    while not stop.is_set():
        if server.proc is not None and server.proc.poll() is not None:
            print(f"serve: tritonserver exited with code {server.proc.returncode}", file=sys.stderr)
            return 1
        stop.wait(1)
    code = server.stop()
    print(f"tritonserver stopped (exit code {code})")
    return 0 if code in (0, None) else 1


def cmd_smoke_test(args: argparse.Namespace) -> int:
    from .smoke import run_smoke_test

    return run_smoke_test(args.url, args.golden, protocol=args.protocol, timeout=args.timeout,
                          tolerance=args.tolerance, variant=args.variant, json_out=args.json)


def cmd_predict(args: argparse.Namespace) -> int:
    from .client import ClientError, TextClient

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("predict: no text given (pass texts as arguments or one per line on stdin)", file=sys.stderr)
        return 2
    try:
        client = TextClient(args.url, args.protocol, args.timeout)
        preds = client.predict(texts)
    except ClientError as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([p.__dict__ for p in preds], ensure_ascii=False, indent=2))
        return 0
    for p in preds:
        scores = " ".join(f"{s:.3f}" for s in p.scores)
        print(f"{p.label:<10} [{scores}]  {p.text}")
    return 0


def cmd_checksum(args: argparse.Namespace) -> int:
    from .util import tree_checksum

    if not args.path.is_dir():
        print(f"checksum: {args.path} is not a directory", file=sys.stderr)
        return 2
    print(tree_checksum(args.path))
    return 0


def cmd_layout(args: argparse.Namespace) -> int:
    print(json.dumps({"models": layout.MODELS.as_dict(), "version": layout.VERSION,
                      "tensors": {k: getattr(layout, k) for k in
                                  ("TEXT", "INPUT_IDS", "ATTENTION_MASK", "LOGITS", "LABEL", "SCORES")}},
                     indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The single-machine pipeline: demo model -> convert -> build-repo -> serve -> predictions + smoke test."""
    from .convert import ConvertOptions, cache_key, convert, load_manifest
    from .demo_model import build_demo_model
    from .repo import RepoOptions, build_repository
    from .serve import TritonServer
    from .smoke import run_smoke_test

    build_demo_model(paths.DEMO_MODEL_DIR)
    artifacts = paths.ARTIFACTS_DIR
    opts = ConvertOptions(model=str(paths.DEMO_MODEL_DIR), output=artifacts, formats=("torchscript", "onnx"))
    key = cache_key(opts)
    if (artifacts / layout.MANIFEST_FILE).is_file() and load_manifest(artifacts).get("cache_key") == key:
        logger.info("Artifacts in %s are up to date (cache key %s)", artifacts, key)
    else:
        convert(opts)
    build_repository(artifacts, paths.REPOSITORY_DIR, RepoOptions())
    with TritonServer(paths.REPOSITORY_DIR, log_file=paths.BUILD_DIR / "tritonserver.log",
                      http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port) as s:
        print("\nPredictions (gRPC, ensemble 'sentiment'):")
        from .client import TextClient

        for p in TextClient(s.grpc_url).predict(args.texts):
            print(f"  {p.label:<9} {' '.join(f'{x:.3f}' for x in p.scores)}  {p.text}")
        print()
        return run_smoke_test(s.grpc_url, artifacts / layout.GOLDEN_FILE)


# --- parser ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tritonfleet", description=__doc__)
    p.add_argument("--version", action="version", version=f"tritonfleet {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo-model", help="build (or reuse) the embedded default sentiment model, offline")
    s.add_argument("--output", type=Path, default=paths.DEMO_MODEL_DIR)
    s.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    s.set_defaults(func=cmd_demo_model)

    s = sub.add_parser("random-model", help="write a random-weight classifier (tiny or roberta-base size)")
    s.add_argument("--output", type=Path, required=True)
    s.add_argument("--preset", choices=("tiny", "roberta-base"), default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_random_model)

    s = sub.add_parser("convert", help="export TorchScript/ONNX/int8 with parity checks and a golden file")
    s.add_argument("--model", default=os.environ.get("TRITONFLEET_MODEL", DEFAULT_MODEL),
                   help=f"hub id or local directory (default: $TRITONFLEET_MODEL or {DEFAULT_MODEL}; "
                        f"the embedded demo model: {paths.DEMO_MODEL_DIR})")
    s.add_argument("--revision", help="hub revision (branch, tag or commit)")
    s.add_argument("--output", type=Path, default=paths.ARTIFACTS_DIR)
    s.add_argument("--formats", type=_csv, default=["torchscript", "onnx"],
                   help="comma-separated: torchscript,onnx,int8 (default: torchscript,onnx)")
    s.add_argument("--max-length", type=int, help="token limit (default: the tokenizer's)")
    s.add_argument("--atol", type=float, default=1e-4, help="max |logit difference| for fp32 exports")
    s.add_argument("--int8-min-agreement", type=float, default=0.98)
    s.add_argument("--int8-per-tensor", action="store_true",
                   help="one int8 weight scale per tensor instead of per output channel (coarser)")
    s.add_argument("--opset", type=int, default=17)
    s.add_argument("--trace-batch", type=int, default=1)
    s.add_argument("--trace-length", type=int, default=100)
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("build-repo", help="render the Triton model repository from conversion artifacts")
    s.add_argument("--artifacts", type=Path, default=paths.ARTIFACTS_DIR)
    s.add_argument("--output", type=Path, default=paths.REPOSITORY_DIR)
    s.add_argument("--backend", choices=layout.BACKENDS, default="python",
                   help="classifier backend (python: runner for CPU hosts without NVIDIA's image)")
    s.add_argument("--format", choices=layout.RUNNER_FORMATS, default="onnx", help="which export to serve")
    s.add_argument("--max-batch-size", type=int, default=64)
    s.add_argument("--preferred-batch-sizes", type=_ints, default=[])
    s.add_argument("--max-queue-delay-us", type=int, default=2000)
    s.add_argument("--instance-count", type=int, default=1)
    s.add_argument("--instance-kind", choices=("KIND_CPU", "KIND_GPU"), default="KIND_CPU")
    s.add_argument("--tokenizer-instance-count", type=int, default=1)
    s.add_argument("--threads", type=int, default=0, help="runner intra-op threads (0: runtime default)")
    s.add_argument("--sub-batch-size", type=int, default=None,
                   help="python runner: sort the batch's texts by length and run them this many at a time "
                        "(0: one run; 1-4 avoid padding waste on CPUs; default 1 for int8, else 0)")
    s.add_argument("--no-warmup", action="store_true")
    s.add_argument("--max-text-bytes", type=int, default=16384, help="longer texts get INVALID_ARG")
    s.add_argument("--tensorrt", action="store_true", help="TensorRT accelerator (onnxruntime on KIND_GPU)")
    s.add_argument("--fp16", action="store_true", help="half precision where the backend supports it")
    s.set_defaults(func=cmd_build_repo)

    s = sub.add_parser("serve", help="run a real tritonserver on a model repository until Ctrl-C")
    s.add_argument("--repo", type=Path, default=paths.REPOSITORY_DIR)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--ready-timeout", type=float, default=180)
    s.set_defaults(func=cmd_serve)

    def client_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--url", default="localhost",
                       help="HOST[:PORT] of the server (default port: 8001 for grpc, 8000 for http)")
        s.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
        s.add_argument("--timeout", type=float, default=30.0, help="seconds per call")

    s = sub.add_parser("smoke-test", help="check a server against the golden file; exit 0 or 1")
    client_args(s)
    s.add_argument("--golden", type=Path, default=paths.ARTIFACTS_DIR / layout.GOLDEN_FILE)
    s.add_argument("--tolerance", type=float, default=1e-3, help="max |score difference|")
    s.add_argument("--variant", choices=("fp32", "int8"),
                   help="golden outputs to compare with (default: what the server says its classifier serves)")
    s.add_argument("--json", type=Path, help="also write the checks as JSON")
    s.set_defaults(func=cmd_smoke_test)

    s = sub.add_parser("predict", help="the article's client: text in, label and scores out")
    client_args(s)
    s.add_argument("texts", nargs="*", help="texts (default: one per line on stdin)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("demo", help="single machine: demo model, convert, build-repo, serve, predict, smoke test")
    s.add_argument("texts", nargs="*", default=["I love you so much!", "I hate this movie",
                                                "Ok, let's see tomorrow.", "Good night 😊"])
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("checksum", help="sha256 of a directory tree (what Ansible compares across hosts)")
    s.add_argument("path", type=Path)
    s.set_defaults(func=cmd_checksum)

    s = sub.add_parser("layout", help="print the model repository layout (model and tensor names) as JSON")
    s.set_defaults(func=cmd_layout)

    try:
        from .bench.cli import add_parser as add_bench
    except ImportError:
        pass
    else:
        add_bench(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if os.environ.get("TRITONFLEET_ONLINE") else "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
