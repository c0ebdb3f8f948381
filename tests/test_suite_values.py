"""Suites are values: each tolerance rule equals, bit for bit, the expression the baselines were
recorded with, and every metric a suite measures has exactly one rule."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcheck.suites.base import Raw
from kvcheck.suites.catalog import ACCURACY, DRIFT, FIDELITY, SUITES, THROUGHPUT, THROUGHPUT_GPU

values = st.floats(0, 1e3, allow_nan=False)
counts = st.integers(1, 4096)

# the expressions the committed baselines were written with, copied in
RECORDED = [
    (FIDELITY, "kl_divergence", lambda v, n: max(0.1 * v, 1e-4)),
    (FIDELITY, "top1_agreement", lambda v, n: 2.0 / n),
    (FIDELITY, "perplexity_ratio", lambda v, n: 0.02 * v + 1e-4),
    (FIDELITY, "attn_rel_error.mean", lambda v, n: max(0.1 * v, 1e-4)),
    (FIDELITY, "attn_rel_error.max", lambda v, n: max(0.1 * v, 1e-4)),
    (FIDELITY, "decode.kl_divergence", lambda v, n: max(0.1 * v, 1e-4)),
    (FIDELITY, "decode.top1_agreement", lambda v, n: 2.0 / n),
    (FIDELITY, "decode.match_tokens", lambda v, n: 16.0 / n),
    (ACCURACY, "passkey-L512.accuracy", lambda v, n: 1.0 / n),
    (DRIFT, "median_diff_pct", lambda v, n: 10.0),
    (DRIFT, "share_20pct_longer", lambda v, n: 2.0 / n),
    (DRIFT, "share_hit_cap", lambda v, n: 2.0 / n),
    (DRIFT, "latency_ratio", lambda v, n: 0.1),
    (THROUGHPUT, "b1-L512.kv_ratio", lambda v, n: 0.005),
]
RECORDED_PERF = {  # floors; the run's own A/A error widens them (test_timings_widen_to_three_times_their_aa_error)
    "b1-L512.prefill_ratio": lambda v, n: 0.05,
    "b1-L512.decode_ratio": lambda v, n: 0.05,
    "b1-L512.compress_share": lambda v, n: max(0.1 * v, 0.005),
}
RECORDED_WORK = {
    "work.prefill.method_ops": lambda v, n: max(0.02 * v, 0.5),
    "work.decode.kv_path_bytes": lambda v, n: max(0.02 * v, 0.5),
    "work.decode.kv_path_growth": lambda v, n: max(0.02 * v, 1e-6),
}


@settings(max_examples=200, deadline=None)
@given(v=values, n=counts)
def test_every_rule_is_the_recorded_expression(v, n):
    for suite, name, expr in RECORDED:
        assert suite.rule(name).tolerance(v, n) == expr(v, n), (suite.name, name)
    for name, expr in RECORDED_PERF.items():
        for suite in (THROUGHPUT, THROUGHPUT_GPU):
            assert suite.rule(name, perf=True).tolerance(v, n) == expr(v, n), name
    for name, expr in RECORDED_WORK.items():
        assert THROUGHPUT.rule(name, work=True).tolerance(v, n) == expr(v, n), name


def test_timings_widen_to_three_times_their_aa_error():
    raw = Raw({"b1-L512.kv_ratio": 0.5}, perf={"b1-L512.prefill_ratio": 1.2, "b1-L512.decode_ratio": 0.9},
              perf_noise={"b1-L512.prefill_ratio": 0.1, "b1-L512.decode_ratio": 0.001})
    m = THROUGHPUT.finalize(raw)
    assert m.perf["b1-L512.prefill_ratio"]["tolerance"] == pytest.approx(0.3)  # 3 × the A/A error
    assert m.perf["b1-L512.decode_ratio"]["tolerance"] == 0.05  # the floor
    assert m.metrics["b1-L512.kv_ratio"]["tolerance"] == 0.005  # bytes: no timing noise


def test_directions_are_as_recorded():
    assert FIDELITY.rule("top1_agreement").direction == "higher"
    assert ACCURACY.rule("kv_retrieval-L512.accuracy").direction == "higher"
    assert DRIFT.rule("median_diff_pct").direction == "higher"
    assert {DRIFT.rule(n).direction for n in ("share_20pct_longer", "share_hit_cap", "latency_ratio")} == {"lower"}


def test_finalize_rounds_samples_and_judges_them_on_the_unrounded_score():
    raw = Raw({"passkey-L512.accuracy": 0.5}, {"passkey-L512.accuracy": 2},
              samples={"a": {"score": 0.4999999, "got": "x"}, "b": {"score": 0.5000004, "got": "y"}})
    m = ACCURACY.finalize(raw)
    assert m.metrics["passkey-L512.accuracy"] == {"value": 0.5, "tolerance": 0.5, "direction": "higher"}
    assert m.samples["a"] == {"score": 0.5, "correct": False, "got": "x"} and m.samples["b"]["correct"] is True
    assert (m.flip_rate, m.alpha) == (0.01, 0.01) and "stable" not in m.samples["a"]
    d = DRIFT.finalize(Raw({"latency_ratio": 1.0}, samples={"p": {"score": -20.00049}}))
    assert d.samples["p"] == {"score": -20.0, "correct": False}


def test_noise_floors_widen_tolerances_and_mark_unstable_samples():
    def raw(acc, a, b):
        return Raw({"passkey-L512.accuracy": acc}, {"passkey-L512.accuracy": 8},
                   samples={"a": {"score": a}, "b": {"score": b}})
    m = ACCURACY.finalize(raw(0.5, 1.0, 0.0), [raw(0.875, 1.0, 1.0), raw(0.5, 1.0, 0.0)])
    # the spread 0.375 × k = 0.75 beats the rule's one sample of 8
    assert m.metrics["passkey-L512.accuracy"] == {"value": 0.5, "tolerance": 0.75, "direction": "higher",
                                                  "noise": 0.375}
    assert (m.samples["a"]["stable"], m.samples["b"]["stable"]) == (True, False)
    quiet = ACCURACY.finalize(raw(0.5, 1.0, 0.0), [raw(0.5, 1.0, 0.0)])
    assert quiet.metrics["passkey-L512.accuracy"]["tolerance"] == 0.125  # the rule's floor holds
    assert quiet.metrics["passkey-L512.accuracy"]["noise"] == 0.0


def test_a_metric_without_a_rule_is_an_error():
    with pytest.raises(KeyError, match="no tolerance rule for metric 'nonsense'"):
        FIDELITY.finalize(Raw({"nonsense": 1.0}))


def test_suite_names_are_the_baseline_folders():
    assert [s.name for s in SUITES] == ["fidelity", "accuracy", "drift", "throughput", "throughput-gpu"]
    assert [s.timed for s in SUITES] == [False, False, False, True, True]
