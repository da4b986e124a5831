"""The benchmark's decision rules: which C candidate is chosen, and how targets are judged."""

from __future__ import annotations

import pytest

from tritonfleet.bench.scoring import choose_candidate, evaluate_targets, summary


def row(name: str, throughput: float, p99: float, errors: int = 0) -> dict:
    return {"candidate": {"name": name}, "throughput": throughput, "p99_ms": p99, "errors": errors}


def test_the_fastest_candidate_within_the_p99_target_wins():
    rows = [row("fast-but-slow-tail", 150, 1800), row("ok", 130, 1400), row("slower-ok", 120, 1200)]
    assert choose_candidate(rows)["candidate"]["name"] == "ok"


def test_without_any_candidate_in_target_ties_go_to_the_lowest_p99():
    rows = [row("mbs32", 144.0, 1806), row("mbs16", 138.7, 1580), row("mbs8", 137.0, 1531), row("1x2", 122, 1710)]
    assert choose_candidate(rows)["candidate"]["name"] == "mbs8"
    rows.append(row("much-slower-but-lower-p99", 130.0, 1510))
    assert choose_candidate(rows)["candidate"]["name"] == "mbs8", "outside the 5% band throughput decides"


def test_a_candidate_with_errors_is_never_chosen_over_a_clean_one():
    rows = [row("errors", 200, 900, errors=3), row("clean", 100, 2000)]
    assert choose_candidate(rows)["candidate"]["name"] == "clean"


def _setups(a: float, b: float, c: float, d: float, d_inv: float, p99: float, r: float | None = None) -> dict:
    out = {"A": {"w200": {"throughput": a}}, "B": {"w200": {"throughput": b}},
           "C": {"w200": {"throughput": c, "p99_ms": p99, "errors": 0}},
           "D": {"w200": {"throughput": d, "batch_invariant_throughput": d_inv}}}
    if r is not None:
        out["R"] = {"w200": {"throughput": r}}
    return out


def test_targets_are_judged_against_ds_batch_invariant_plan_and_the_overall_ratio_is_only_informational():
    t = evaluate_targets(_setups(a=15, b=20, c=135, d=166, d_inv=139, p99=1900, r=100))
    assert t["C_vs_A_throughput"] == {"value": 9.0, "target": ">= 10.0", "pass": False}
    assert t["C_vs_B_throughput"]["pass"] is True
    assert t["C_vs_D_batch_invariant"]["value"] == round(135 / 139, 3)
    assert t["C_vs_D_batch_invariant"]["pass"] is True
    assert t["C_p99_ms"]["pass"] is False
    assert t["all_pass"] is False
    assert t["info_C_vs_D_overall"]["value"] == round(135 / 166, 3)
    lines = summary({"setups": {}, "targets": t})
    assert "C_vs_D_overall: 0.813 (C / D's best plan of any kind (informational))" in lines


def test_the_peer_target_compares_c_with_the_best_peer_of_the_same_run():
    t = evaluate_targets(_setups(a=10, b=20, c=150, d=160, d_inv=150, p99=1200, r=90))
    assert t["C_vs_best_peer_throughput"] == {"value": round(150 / 90, 3), "target": ">= 1.5", "pass": True,
                                              "peer": "R"}
    t = evaluate_targets(_setups(a=10, b=20, c=150, d=160, d_inv=150, p99=1200, r=120))
    assert t["C_vs_best_peer_throughput"]["pass"] is False and t["all_pass"] is False
    assert evaluate_targets(_setups(a=10, b=20, c=150, d=160, d_inv=150, p99=1200))[
        "C_vs_best_peer_throughput"]["pass"] is None, "without a peer the target is not judged"


def test_all_targets_met_is_all_pass():
    t = evaluate_targets(_setups(a=10, b=20, c=150, d=160, d_inv=150, p99=1200, r=95))
    assert t["all_pass"] is True


def test_a_candidate_is_model_options_and_its_flags_come_from_them():
    from tritonfleet.bench.setups import candidate_options, options_report
    from tritonfleet.errors import UsageError
    from tritonfleet.release import SERVE

    opts = candidate_options("onnx", {"instance_count": 2, "threads": 1, "max_batch_size": 32, "sub_batch_size": 2})
    assert (opts.format, opts.instance_count, opts.threads, opts.sub_batch_size) == ("onnx", 2, 1, 2)
    assert options_report(opts)["build_repo"] == " ".join(opts.to_cli_args(SERVE))
    # int8 runs one text per run whatever the candidate asks (dynamic quantization; see ModelOptions.validate)
    assert candidate_options("int8", {"sub_batch_size": 4}).sub_batch_size == 1
    # int8-static is batch-invariant: sorted sub-batches are served as asked, and a candidate may name its format
    static = candidate_options("int8", {"sub_batch_size": 4, "format": "int8-static"})
    assert (static.format, static.sub_batch_size) == ("int8-static", 4)
    with pytest.raises(UsageError, match="runner_format"):
        candidate_options("onnx", {"runner_format": "onnx"})
