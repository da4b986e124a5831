"""The one CLI: `tritonfleet <command>`. Run `tritonfleet <command> --help` for each command's options."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
import threading
from pathlib import Path

from . import __version__, layout, paths
from .convert import DEFAULT_MODEL
from .errors import TritonfleetError, UsageError
from .random_model import PRESETS
from .release import CONVERT, SERVE, ModelOptions, add_option_arguments, options_from_args

logger = logging.getLogger("tritonfleet")

def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


# --- commands -------------------------------------------------------------------------------------------

def cmd_demo_model(args: argparse.Namespace) -> int:
    from .demo import TASKS, build_demo_model

    if args.output and not args.task:
        raise UsageError("--output needs --task (one model per folder)")
    for task in [args.task] if args.task else list(TASKS):
        output = args.output or paths.DEMO_MODELS_DIR / task
        info = build_demo_model(task, output, force=args.force)
        print(f"demo model {task}: {output} (held-out accuracy {info['held_out_accuracy']:.1%} on "
              f"{info['held_out_size']} texts{', cached' if info.get('cached') else ''})")
    return 0


def cmd_random_model(args: argparse.Namespace) -> int:
    from .random_model import make_random_model

    make_random_model(args.output, args.preset, args.seed)
    print(f"random {args.preset} model: {args.output} (random weights: for tests and speed benchmarks only)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert, parity_lines
    from .release import ModelSpec, conversion_key

    opts = options_from_args(args, CONVERT)
    spec = ModelSpec(name=layout.DEFAULT_MODEL_NAME, model=args.model, revision=args.revision or "main",
                     options=opts, golden_texts=tuple(args.golden_text))
    identity = spec.source_identity()
    golden, agreement = spec.check_texts()
    manifest = convert(args.model, args.output, opts, revision=args.revision, golden_texts=golden,
                       agreement_texts=agreement, key=conversion_key(spec, identity=identity), source=identity)
    print("\n".join(parity_lines(manifest["parity"])))
    print(f"artifacts: {args.output} (conversion key {manifest['conversion_key']})")
    return 0


def cmd_build_repo(args: argparse.Namespace) -> int:
    from .repo import build_repository

    release = build_repository([(args.name, args.artifacts, options_from_args(args, SERVE))], args.output)
    m = release.models[0]
    print(f"model repository: {args.output} (model {m.name}: backend {m.options['backend']}, {m.options['format']}; "
          f"release id {release.id})")
    return 0


def cmd_release_build(args: argparse.Namespace) -> int:
    from . import release as rel

    spec = rel.ReleaseSpec.load(args.spec)
    if args.locate_only:
        try:
            built = rel.locate(spec, args.releases)
        except rel.NotBuiltError as exc:  # what to build, for the caller (Ansible), and exit 3
            _print_json({"built": False, "key": exc.key, "path": exc.path})
            raise
    else:
        built = rel.build(spec, args.releases, args.conversions, force=args.force, expect_key=args.expect_key)
    _print_json({"built": True, **built.as_json()})
    return 0


def cmd_release_show(args: argparse.Namespace) -> int:
    from .release import Release

    _print_json(Release.open(args.path).as_json())
    return 0


def cmd_release_verify(args: argparse.Namespace) -> int:
    from .release import Release

    release = Release.open(args.path)
    print(f"{release.path}: OK, {len(release.checksums)} files match SHA256SUMS (release id {release.id})")
    return 0


def cmd_release_options(args: argparse.Namespace) -> int:
    rows = ModelOptions.describe()
    if args.format == "json":
        _print_json(rows)
    elif args.format == "argument-spec":
        print(argument_spec_yaml(rows), end="")
    else:
        for r in rows:
            choices = f" ({'|'.join(r['choices'])})" if r["choices"] else ""
            print(f"{r['name']:<26} {r['stage']:<8} {r['type']:<10} {json.dumps(r['default']):<26} "
                  f"{r['help']}{choices}")
    return 0


def argument_spec_yaml(rows: list[dict]) -> str:
    """The `options:` of an Ansible argument spec for a model's options (roles/model_conversion's
    meta/argument_specs.yml holds this text; a unit test keeps the two equal)."""
    types = {"int": "int", "float": "float", "str": "str", "bool": "bool", "list[str]": "list", "list[int]": "list"}
    lines = []
    for r in rows:
        lines.append(f"  {r['name']}:")
        lines.append(f"    type: {types[r['type']]}")
        if r["type"].startswith("list["):
            lines.append(f"    elements: {r['type'][5:-1]}")
        if r["choices"]:
            lines.append(f"    choices: [{', '.join(map(str, r['choices']))}]")
        text = f"{r['help']} (default: {json.dumps(r['default'])})"
        lines.append("    description: >-")  # folded: long help stays within the line length of the YAML linter
        lines += [f"      {line}" for line in textwrap.wrap(text, 100, break_on_hyphens=False)]
    return "\n".join(lines) + "\n"


def cmd_release_record(args: argparse.Namespace) -> int:
    from .release import Release, record_deploy

    entry = record_deploy(args.record, Release.open(args.release), None if args.fleet else args.host)
    print(f"{args.record}: {'the fleet' if args.fleet else args.host} serves release {entry['id'][:12]} "
          f"(key {entry['key']}, {', '.join(entry['models'])})")
    return 0


def cmd_release_deployed(args: argparse.Namespace) -> int:
    from .release import deployed

    release = deployed(args.record, args.host, previous=args.previous)
    if args.field:
        print(release.as_json()[args.field])
    else:
        _print_json(release.as_json())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import TritonServer

    server = TritonServer(args.repo, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, host=args.host)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start(ready_timeout=args.ready_timeout)
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

    if (args.release is None) == (args.golden is None):
        raise UsageError("give --release DIR (every model of a release) or --golden FILE (one model, --model)")
    return run_smoke_test(args.url, args.golden, protocol=args.protocol, timeout=args.timeout,
                          tolerance=args.tolerance, variant=args.variant, json_out=args.json, release=args.release,
                          model=args.model, public=args.public, ca_file=args.ca_file)


def cmd_predict(args: argparse.Namespace) -> int:
    from .client import TextClient

    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError("no text given (pass texts as arguments or one per line on stdin)")
    preds = TextClient(args.url, args.protocol, args.timeout, model=args.model, ca_file=args.ca_file).predict(texts)
    if args.json:
        print(json.dumps([p.__dict__ for p in preds], ensure_ascii=False, indent=2))
        return 0
    for p in preds:
        scores = " ".join(f"{s:.3f}" for s in p.scores)
        print(f"{p.label:<10} [{scores}]  {p.text}")
    return 0


def cmd_checksum(args: argparse.Namespace) -> int:
    from .release import tree_checksum

    if not args.path.is_dir():
        raise UsageError(f"{args.path} is not a directory")
    print(tree_checksum(args.path))
    return 0


def cmd_layout(args: argparse.Namespace) -> int:
    print(json.dumps({"models": layout.model_names(args.model).as_dict(), "version": layout.VERSION,
                      "tensors": {k: getattr(layout, k) for k in
                                  ("TEXT", "INPUT_IDS", "ATTENTION_MASK", "LOGITS", "LABEL", "SCORES")}},
                     indent=2))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .monitoring import Prometheus, fleet_status, format_status

    table = fleet_status(Prometheus(args.prometheus, timeout=args.timeout))
    if args.json:
        _print_json(table)
    elif not table:
        print(f"Prometheus at {args.prometheus} knows no Triton server yet")
    else:
        print(format_status(table))
    return 0


def cmd_monitoring_render(args: argparse.Namespace) -> int:
    from .monitoring import generated_files, render

    if args.check:
        stale = [name for name, content in generated_files().items()
                 if not (args.output / name).is_file() or (args.output / name).read_text() != content]
        if stale:
            raise UsageError(f"out of date under {args.output}: {', '.join(stale)} (run tritonfleet monitoring render)")
        print(f"{args.output}: the generated monitoring files are up to date")
        return 0
    changed = render(args.output)
    print(f"{args.output}: {len(changed)} file(s) written" + "".join(f"\n  {p}" for p in changed))
    return 0


def demo_spec(options: dict | None = None):  # -> ReleaseSpec
    """A release of every embedded demo model (built when missing), each named after its task."""
    from .demo import TASKS, build_demo_model
    from .release import ReleaseSpec

    tasks = list(TASKS)
    for task in tasks:
        build_demo_model(task, paths.DEMO_MODELS_DIR / task)
    return ReleaseSpec.from_dict({"models": [{"name": t, "model": str(paths.DEMO_MODELS_DIR / t)} for t in tasks],
                                  "options": options or {}})


def cmd_image_context(args: argparse.Namespace) -> int:
    from . import conversion_image

    build_args = conversion_image.parse_build_args(args.build_arg)
    _print_json(conversion_image.context(args.project, build_args, dockerfile=args.dockerfile,
                                         wheelhouse=args.wheelhouse, output=args.output, tar=args.tar))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The single-machine pipeline: demo models -> release (convert, build) -> serve -> predictions, smoke test."""
    from .client import TextClient
    from .release import build
    from .serve import TritonServer
    from .smoke import run_smoke_test

    release = build(demo_spec(), paths.RELEASES_DIR, paths.CONVERSIONS_DIR)
    with TritonServer(release.path, log_file=paths.BUILD_DIR / "tritonserver.log", http_port=args.http_port,
                      grpc_port=args.grpc_port, metrics_port=args.metrics_port) as s:
        client = TextClient(s.grpc_url)
        for name in release.names():
            print(f"\nPredictions (gRPC, model '{name}'):")
            for p in client.predict(args.texts, name):
                print(f"  {p.label:<11} {' '.join(f'{x:.3f}' for x in p.scores)}  {p.text}")
        print()
        return run_smoke_test(s.grpc_url, release=release.path)


# --- parser ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tritonfleet", description=__doc__)
    p.add_argument("--version", action="version", version=f"tritonfleet {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from .demo import TASKS

    s = sub.add_parser("demo-model", help="build (or reuse) the embedded demo models, offline")
    s.add_argument("--task", choices=sorted(TASKS), help="just this demo model (default: all of them)")
    s.add_argument("--output", type=Path, help=f"default: {paths.DEMO_MODELS_DIR}/TASK")
    s.add_argument("--force", action="store_true", help="rebuild even when the cache is valid")
    s.set_defaults(func=cmd_demo_model)

    s = sub.add_parser("random-model", help="write a random-weight classifier (tiny or roberta-base size)")
    s.add_argument("--output", type=Path, required=True)
    s.add_argument("--preset", choices=PRESETS, default="tiny")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_random_model)

    s = sub.add_parser("convert", help="export TorchScript/ONNX/int8 with parity checks and a golden file")
    s.add_argument("--model", default=os.environ.get("TRITONFLEET_MODEL", DEFAULT_MODEL),
                   help=f"hub id or local directory (default: $TRITONFLEET_MODEL or {DEFAULT_MODEL}; "
                        f"the embedded demo models: {paths.DEMO_MODELS_DIR}/TASK)")
    s.add_argument("--revision", help="hub revision (branch, tag or commit)")
    s.add_argument("--output", type=Path, default=paths.ARTIFACTS_DIR)
    s.add_argument("--golden-text", action="append", default=[], metavar="TEXT",
                   help="a text for the golden file and the smoke test, besides the built-in ones (repeatable)")
    add_option_arguments(s, CONVERT)
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("build-repo", help="render a one-model Triton repository (a release) from conversion artifacts")
    s.add_argument("--artifacts", type=Path, default=paths.ARTIFACTS_DIR)
    s.add_argument("--output", type=Path, default=paths.REPOSITORY_DIR)
    s.add_argument("--name", default=layout.DEFAULT_MODEL_NAME, help="the model's name (its ensemble's)")
    add_option_arguments(s, SERVE)
    s.set_defaults(func=cmd_build_repo)

    r = sub.add_parser("release", help="build, find, verify and record releases (one or more models)")
    rsub = r.add_subparsers(dest="release_command", required=True, metavar="SUBCOMMAND")
    s = rsub.add_parser("build", help="build the release of a spec, or find it built; print it as JSON")
    s.add_argument("--spec", required=True, help="the release spec as JSON (a file, or - for stdin)")
    s.add_argument("--releases", type=Path, default=paths.RELEASES_DIR, help="where releases are kept by key")
    s.add_argument("--conversions", type=Path, default=paths.CONVERSIONS_DIR,
                   help="where conversion artifacts are kept by conversion key")
    s.add_argument("--locate-only", action="store_true",
                   help="do not build: when it is not built, print its key and path and exit 3")
    s.add_argument("--expect-key", default="", help="refuse to build when the spec's key is not this one")
    s.add_argument("--force", action="store_true", help="write the release again (conversions stay cached)")
    s.set_defaults(func=cmd_release_build)
    s = rsub.add_parser("show", help="print a release as JSON (verified against its SHA256SUMS)")
    s.add_argument("path", type=Path)
    s.set_defaults(func=cmd_release_show)
    s = rsub.add_parser("verify", help="check a release's files against its SHA256SUMS")
    s.add_argument("path", type=Path)
    s.set_defaults(func=cmd_release_verify)
    s = rsub.add_parser("options", help="the options of a model: name, stage, type, default, help")
    s.add_argument("--format", choices=("table", "json", "argument-spec"), default="table")
    s.set_defaults(func=cmd_release_options)
    s = rsub.add_parser("record", help="record that a host (or the fleet) now serves a release")
    s.add_argument("record", type=Path, help=f"the fleet's deploy record, e.g. {paths.DEPLOYED_DIR}/local.json")
    s.add_argument("--release", type=Path, required=True, help="the release's folder")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--host")
    who.add_argument("--fleet", action="store_true", help="the whole fleet (after a complete rollout)")
    s.set_defaults(func=cmd_release_record)
    s = rsub.add_parser("deployed", help="the release a host (default: the fleet) serves, from the deploy record")
    s.add_argument("record", type=Path)
    s.add_argument("--host")
    s.add_argument("--previous", action="store_true", help="the release it served before the current one")
    s.add_argument("--field", choices=("path", "id", "key"), help="print just this field")
    s.set_defaults(func=cmd_release_deployed)

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
        s.add_argument("--model", default=layout.DEFAULT_MODEL_NAME, help="the model (ensemble) to call")
        s.add_argument("--ca-file", type=Path, help="speak TLS, trusting this CA (a load balancer's certificate)")

    s = sub.add_parser("smoke-test", help="check a server against a release's golden files; exit 0 or 1")
    client_args(s)
    s.add_argument("--release", type=Path, help="a release folder: check every model of it")
    s.add_argument("--golden", type=Path, help="one model's golden file (with --model)")
    s.add_argument("--tolerance", type=float, default=1e-3, help="max |score difference|")
    s.add_argument("--variant", choices=("fp32", *layout.QUANTIZED_FORMATS),
                   help="golden outputs to compare with (default: what the server says its classifier serves)")
    s.add_argument("--json", type=Path, help="also write the checks as JSON")
    s.add_argument("--public", action="store_true",
                   help="through a load balancer: the models' internal steps must be refused, not ready")
    s.set_defaults(func=cmd_smoke_test)

    s = sub.add_parser("predict", help="the article's client: text in, label and scores out")
    client_args(s)
    s.add_argument("texts", nargs="*", help="texts (default: one per line on stdin)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("demo", help="single machine: demo models, release, serve, predict, smoke test")
    s.add_argument("texts", nargs="*", default=["I love you so much!", "I hate this movie",
                                                "Ok, let's see tomorrow.", "Good night 😊"])
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.set_defaults(func=cmd_demo)

    from .conversion_image import DOCKERFILE, LABEL

    s = sub.add_parser("image-context", help="the conversion image's inputs (its label); write its build context",
                       description="Compute the inputs of the conversion image (the value of its label " + LABEL
                       + ") from the project checkout and the build arguments; with --output or --tar, write its "
                       "build context (docker/conversion.Dockerfile's layout). Prints JSON.")
    s.add_argument("--project", type=Path, default=Path("."), help="the project checkout (default: .)")
    s.add_argument("--dockerfile", default=DOCKERFILE, help=f"relative to the project (default: {DOCKERFILE})")
    s.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a build argument of the image, as docker build takes it (repeatable); part of the inputs")
    s.add_argument("--wheelhouse", type=Path, help="a directory of wheels for an offline build (not in the inputs)")
    s.add_argument("--output", type=Path, help="write the context into this directory (replaced)")
    s.add_argument("--tar", type=Path, help="write the context as this tarball")
    s.set_defaults(func=cmd_image_context)

    s = sub.add_parser("checksum", help="sha256 of a directory tree: the sha256 of its SHA256SUMS (a release's id)")
    s.add_argument("path", type=Path)
    s.set_defaults(func=cmd_checksum)

    s = sub.add_parser("layout", help="print the model repository layout (model and tensor names) as JSON")
    s.add_argument("--model", default=layout.DEFAULT_MODEL_NAME)
    s.set_defaults(func=cmd_layout)

    s = sub.add_parser("status", help="the fleet's table from Prometheus: per host ready, req/s, failures/s, queue, "
                                      "p50/p99, batch, CPU (GPU)")
    s.add_argument("--prometheus", default=os.environ.get("TRITONFLEET_PROMETHEUS", "http://127.0.0.1:9090"),
                   help="Prometheus's URL (default: $TRITONFLEET_PROMETHEUS or http://127.0.0.1:9090; the local "
                        "fleet: http://$(scripts/fleet.sh ip tf-convert-1):9090)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds per query")
    s.add_argument("--json", action="store_true", help="host -> {series: value} as JSON")
    s.set_defaults(func=cmd_status)

    r = sub.add_parser("monitoring", help="the monitoring role's generated files (rules, console page, dashboard)")
    rsub = r.add_subparsers(dest="monitoring_command", required=True, metavar="SUBCOMMAND")
    s = rsub.add_parser("render", help="write the recording rules, the console page and the Grafana dashboard")
    s.add_argument("--output", type=Path, default=paths.PROJECT_ROOT / "roles" / "monitoring" / "files",
                   help="the monitoring role's files/ (default)")
    s.add_argument("--check", action="store_true", help="write nothing; exit 2 when a file is out of date")
    s.set_defaults(func=cmd_monitoring_render)

    from .bench.cli import add_parser as add_bench  # argparse only: the bench's own imports wait for `bench`

    add_bench(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if os.environ.get("TRITONFLEET_ONLINE") else "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = " ".join(filter(None, [args.command, getattr(args, "release_command", None),
                                     getattr(args, "monitoring_command", None)]))
    try:
        return int(args.func(args) or 0)
    except TritonfleetError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
