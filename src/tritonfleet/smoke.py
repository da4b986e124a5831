"""`tritonfleet smoke-test`: prove a running server serves a release, model by model.

Checks, in order: server live, server ready; then for every model of the release (or the one model given with
its golden file): each of its Triton models ready, the ensemble's metadata, each golden text alone, all golden
texts as batches, and that an empty text is refused with INVALID_ARG; last, the server is still ready.
Through a load balancer (`public`), only the models' ensembles are reachable: their internal steps must be
refused (HTTP 403, gRPC PERMISSION_DENIED) instead of ready.
Prints a table; `run_smoke_test` returns 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import golden as g
from . import layout
from .client import ClientError, TextClient
from .errors import TritonfleetError
from .release import Release


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _short(text: str, width: int = 38) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _score_diff(got: list[float], want: list[float]) -> float:
    return max(abs(a - b) for a, b in zip(got, want, strict=True))


def served_variant(client: TextClient, name: str = layout.DEFAULT_MODEL_NAME) -> str:
    """'int8' when the classifier of model `name` runs the int8 export, else 'fp32': read from its loaded config
    (the python runner's `runner` parameter, or a native backend's default_model_filename)."""
    cfg = client.model_config(layout.model_names(name).classifier)
    model_file = cfg.get("default_model_filename", "")
    runner = cfg.get("parameters", {}).get("runner", {}).get("string_value")
    if runner:
        model_file = json.loads(runner).get("model_file", model_file)
    return "int8" if model_file == layout.ONNX_INT8_FILE else "fp32"


def refused(status: str | None) -> bool:
    """A load balancer's refusal: HTTP 403 or gRPC PERMISSION_DENIED."""
    return status is not None and ("403" in status or "PERMISSION_DENIED" in status)


def model_checks(client: TextClient, name: str, gold: g.GoldenFile, tolerance: float,
                 variant: str | None, prefix: str = "", public: bool = False) -> list[Check]:
    """The checks of one model `name` against its golden file; `variant` None: the variant the server serves.
    `public`: through a load balancer, where the internal steps must be refused."""
    checks: list[Check] = []

    def add(check: str, ok: bool, detail: str = "") -> bool:
        checks.append(Check(prefix + check, ok, detail))
        return ok

    names = layout.model_names(name)
    add(f"model {names.ensemble} ready", client.model_ready(names.ensemble))
    for triton_name in names.steps():
        if not public:
            add(f"model {triton_name} ready", client.model_ready(triton_name))
            continue
        try:
            client.model_ready(triton_name)
            add(f"step {triton_name} refused", False, "the internal step answers through the load balancer")
        except ClientError as exc:
            add(f"step {triton_name} refused", refused(exc.status), f"{exc.status}")
    if variant is None:
        variant = served_variant(client, name)
        if variant != "fp32" and not any(variant in e.variants for e in gold.entries):
            add("golden outputs", False, f"the server serves {variant}; the golden file has no {variant} outputs")
            return checks
    md = client.metadata(names.ensemble)
    inputs = {i["name"]: i for i in md.get("inputs", [])}
    outputs = {o["name"]: o for o in md.get("outputs", [])}
    scores_shape = [int(d) for d in outputs.get(layout.SCORES, {}).get("shape", [])]
    add("metadata", layout.TEXT in inputs and inputs[layout.TEXT].get("datatype") == "BYTES"
        and layout.LABEL in outputs and scores_shape[-1:] == [len(gold.labels)],
        f"inputs {sorted(inputs)}, outputs {sorted(outputs)}, SCORES shape {scores_shape}, serving {variant}")

    servable = [e for e in gold.entries if g.is_servable(e.text)]
    for entry in servable:
        want_label, want_scores = gold.expected(entry, variant)
        got = client.predict([entry.text], name)[0]
        diff = _score_diff(got.scores, want_scores)
        add(f"single {_short(entry.text)!r}", got.label == want_label and diff <= tolerance,
            f"{got.label} (want {want_label}), max |score diff| {diff:.1e}")
    # One request per max_batch_size texts: the server refuses larger requests.
    size = client.max_batch_size(names.ensemble) or len(servable)
    batch = [p for i in range(0, len(servable), size)
             for p in client.predict([e.text for e in servable[i:i + size]], name)]
    bad = [(e, p) for e, p in zip(servable, batch, strict=True)
           if p.label != gold.expected(e, variant)[0]
           or _score_diff(p.scores, gold.expected(e, variant)[1]) > tolerance]
    add(f"batch of {len(servable)} (requests of <= {size})", not bad,
        "all labels and scores match" if not bad else f"{len(bad)} differ, first {bad[0][0].text[:40]!r}")
    try:
        client.predict([""], name)
        add("empty text refused", False, "the server answered an empty text")
    except ClientError as exc:
        add("empty text refused", "INVALID" in (exc.status or "") or "400" in (exc.status or ""),
            f"{exc.status}: {str(exc)[:60]}")
    return checks


def run_checks(client: TextClient, targets: list[tuple[str, g.GoldenFile, str | None]], tolerance: float,
               variant: str | None, public: bool = False) -> list[Check]:
    """Every check against the server, for every (model name, golden file, variant it serves) target."""
    checks = [Check("server live", client.live(), "")]
    if not checks[0].ok:
        return checks
    checks.append(Check("server ready", client.ready(), ""))
    if not checks[-1].ok:
        return checks
    for name, gold, served in targets:
        checks += model_checks(client, name, gold, tolerance, variant or served,
                               f"{name}: " if len(targets) > 1 else "", public)
    checks.append(Check("server ready after bad input", client.ready(), ""))
    return checks


def print_table(checks: list[Check], url: str, protocol: str, models: list[str], out: TextIO) -> None:
    w = max(len(c.name) for c in checks)
    print(f"smoke test of {url} over {protocol}: {', '.join(models)}", file=out)
    print(f"{'check':<{w}}  result  detail", file=out)
    print(f"{'-' * w}  ------  ------", file=out)
    for c in checks:
        print(f"{c.name:<{w}}  {'PASS' if c.ok else 'FAIL':<6}  {c.detail}", file=out)
    failed = sum(not c.ok for c in checks)
    print(f"{len(checks) - failed}/{len(checks)} checks passed" + (f", {failed} FAILED" if failed else ""), file=out)


def targets_of(release: Path | None, golden_file: Path | None,
               model: str) -> list[tuple[str, g.GoldenFile, str | None]]:
    """What to check: every model of the release at `release` (with the variant the release says it serves), or
    `model` against `golden_file` (the variant is then read from the server)."""
    if release is not None:
        rel = Release.open(release)
        return [(m.name, g.GoldenFile.load(rel.golden_file(m.name)), m.variant) for m in rel.models]
    if golden_file is None:
        raise ValueError("give a release or a golden file")
    return [(model, g.GoldenFile.load(golden_file), None)]


def run_smoke_test(url: str, golden_file: Path | None = None, protocol: str = "grpc", timeout: float = 30.0,
                   tolerance: float = 1e-3, variant: str | None = None, json_out: Path | None = None,
                   out: TextIO | None = None, release: Path | None = None,
                   model: str = layout.DEFAULT_MODEL_NAME, public: bool = False,
                   ca_file: Path | None = None) -> int:
    """Check the server at `url` against a release (every model) or one model's golden file; 0 when all pass.
    `public`: through a load balancer (internal steps must be refused); `ca_file`: over TLS."""
    out = out or sys.stdout
    try:
        targets = targets_of(release, golden_file, model)
        client = TextClient(url, protocol, timeout, ca_file=ca_file)
        checks = run_checks(client, targets, tolerance, variant, public)
    except TritonfleetError as exc:
        print(f"smoke-test: {exc}", file=sys.stderr)
        return 1
    print_table(checks, client.url, protocol, [name for name, _, _ in targets], out)
    if json_out:
        json_out.write_text(json.dumps([c.__dict__ for c in checks], indent=2) + "\n")
    client.close()
    return 0 if all(c.ok for c in checks) else 1
