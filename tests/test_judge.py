"""The pure judge: a stored baseline and a measurement in, a verdict out (no pytest, no files)."""
from __future__ import annotations

import math

import pytest

from kvcheck import judge as jd

SCHEMA = 1


def ctx(**kw) -> jd.Context:
    base = dict(suite="accuracy", method_id="snapkv-r0.5", header={"suite": "accuracy", "method_id": "snapkv-r0.5"},
                path="b/accuracy/snapkv-r0.5.json", machine="cpu-x", provenance={"written": "now"},
                accept="pytest t.py -k 'snapkv-r0.5' --kvcheck-update=")
    return jd.Context(**{**base, **kw})


def stored(acc=0.75, samples=None, perf=None) -> dict:
    doc = {"schema": SCHEMA, "key": {"suite": "accuracy", "method_id": "snapkv-r0.5"},
           "metrics": {"passkey.accuracy": jd.metric(acc, 0.125, "higher")}, "details": {}}
    if samples is not None:
        doc["samples"] = samples
    if perf is not None:
        doc["perf"] = perf
    return doc


def rec(correct: bool, got="x") -> dict:
    return {"score": float(correct), "correct": correct, "expected": "1", "got": got}


def measured(acc=0.75, samples=None, allowance=1, perf=None, skip=None) -> jd.Measured:
    return jd.Measured({"passkey.accuracy": jd.metric(acc, 0.125, "higher")}, samples=samples, perf=perf,
                       sample_allowance=allowance, skip_reason=skip)


def test_unchanged_passes_and_writes_nothing():
    v = jd.judge(stored(), measured(), ctx(), SCHEMA)
    assert (v.fail, v.skip, v.write) == (None, None, None)
    assert [(r.metric, r.status) for r in v.rows] == [("passkey.accuracy", "ok")]


def test_a_drop_beyond_tolerance_fails_naming_metric_numbers_and_accept_command():
    v = jd.judge(stored(0.75), measured(0.5), ctx(), SCHEMA)
    assert v.fail.startswith("kvcheck: snapkv-r0.5 regressed in accuracy on passkey.accuracy")
    assert "0.75" in v.fail and "0.5" in v.fail and "±0.125" in v.fail and "(higher is better)" in v.fail
    assert v.fail.endswith("accept it with: pytest t.py -k 'snapkv-r0.5' --kvcheck-update=all")
    assert v.write is None


def test_a_rise_is_improved_and_passes():
    v = jd.judge(stored(0.5), measured(0.875), ctx(), SCHEMA)
    assert v.fail is None and v.rows[0].status == "improved"


def test_sample_flips_beyond_the_allowance_fail_listing_the_samples():
    base = {"a": rec(True), "b": rec(True), "c": rec(False)}
    now = {"a": rec(False, "nope"), "b": rec(False), "c": rec(True)}
    v = jd.judge(stored(samples=base), measured(samples=now, allowance=1), ctx(), SCHEMA)
    assert "samples right→wrong: 2 (allowed 1); wrong→right: 1" in v.fail
    assert "a: expected '1', baseline got 'x', now 'nope'" in v.fail
    flips_row = [r for r in v.rows if r.metric == "samples.right_to_wrong"][0]
    assert (flips_row.now, flips_row.status) == (2, "regressed")
    assert jd.judge(stored(samples=base), measured(samples=now, allowance=2), ctx(), SCHEMA).fail is None


def test_flip_allowance_is_the_binomial_false_alarm_budget():
    # P(X ≥ 2) = 0.024 > 1 %, P(X ≥ 3) = 0.0017 ≤ 1 % for 24 stable samples flipping 1 % each
    assert jd.flip_allowance(24, 0.01, 0.01) == 2
    assert jd.binomial_tail(24, 0.01, 3) == pytest.approx(0.00175, abs=1e-4)
    assert jd.flip_allowance(0, 0.01, 0.01) == 0 and jd.flip_allowance(8, 0.0, 0.01) == 0
    for n in (1, 8, 32, 200):  # the budget holds: more than the allowance is rarer than alpha
        a = jd.flip_allowance(n, 0.02, 0.01)
        assert jd.binomial_tail(n, 0.02, a + 1) <= 0.01 < jd.binomial_tail(n, 0.02, a) or a == 0


def test_unstable_samples_flip_without_counting_and_stable_ones_are_tested():
    base = {i: {**rec(True), "stable": i not in ("u1", "u2")} for i in ("a", "b", "c", "u1", "u2")}
    base.update({f"s{i}": {**rec(True), "stable": True} for i in range(19)})  # 22 stable in all
    only_unstable = {**{i: rec(True) for i in base}, "u1": rec(False), "u2": rec(False)}
    m = jd.Measured({"passkey.accuracy": jd.metric(0.75, 0.125, "higher")}, samples=only_unstable,
                    flip_rate=0.01, alpha=0.01)
    v = jd.judge(stored(samples=base), m, ctx(), SCHEMA)
    assert v.fail is None
    assert [(r.now, r.tolerance) for r in v.rows if r.metric == "samples.right_to_wrong"] == [(0, 2)]
    three = {**only_unstable, "a": rec(False), "b": rec(False), "c": rec(False, "zz")}
    m.samples = three
    v = jd.judge(stored(samples=base), m, ctx(), SCHEMA)
    assert "samples right→wrong: 3 of 22 stable; P(≥ 3 | 1% per stable sample) = 0.0013 (allowed 2)" in v.fail
    assert "c: expected '1', baseline got 'x', now 'zz'" in v.fail
    assert "not counted (unstable under perturbation when recorded): u1, u2" in v.fail


def test_no_baseline_writes_one_and_fails_unless_accepting():
    v = jd.judge(None, measured(), ctx(), SCHEMA)
    assert "no baseline for snapkv-r0.5 in accuracy; new baseline written to b/accuracy/snapkv-r0.5.json" in v.fail
    assert v.write["metrics"] == measured().metrics and v.write["key"] == ctx().header
    for mode in ("new", "all"):
        v = jd.judge(None, measured(), ctx(update=mode), SCHEMA)
        assert v.fail is None and v.write is not None


def test_update_all_rewrites_only_what_moved_and_keeps_perf():
    perf = {"cpu-x": {"metrics": {}, "provenance": {}}}
    assert jd.judge(stored(perf=perf), measured(), ctx(update="all"), SCHEMA).write is None
    v = jd.judge(stored(0.75, perf=perf), measured(0.25), ctx(update="all"), SCHEMA)
    assert v.fail is None and v.write["metrics"]["passkey.accuracy"]["value"] == 0.25 and v.write["perf"] == perf


def test_key_mismatch_and_non_finite_fail_without_writing():
    doc = stored()
    doc["key"]["method_id"] = "other"
    v = jd.judge(doc, measured(), ctx(update="all"), SCHEMA)
    assert "holds 'other' in 'accuracy', not 'snapkv-r0.5'" in v.fail and v.write is None
    bad = jd.Measured({"passkey.accuracy": {"value": math.nan, "tolerance": 0.1, "direction": "higher"}})
    v = jd.judge(stored(), bad, ctx(update="all"), SCHEMA)
    assert "measured a non-finite passkey.accuracy" in v.fail and v.write is None


def test_timings_without_this_machines_entry_skip_or_fail_when_strict():
    perf = {"other-machine": {"metrics": {"t": jd.metric(1.0, 0.25, "lower")}}}
    timed = jd.Measured({"m": jd.metric(1, 0, "equal")}, perf={"t": jd.metric(1.0, 0.25, "lower")})
    doc = {**stored(perf=perf), "metrics": {"m": jd.metric(1, 0, "equal")}}
    v = jd.judge(doc, timed, ctx(), SCHEMA)
    assert v.fail is None and "no perf baseline for machine 'cpu-x'" in v.skip
    assert "no perf baseline" in jd.judge(doc, timed, ctx(strict_perf=True), SCHEMA).fail
    assert jd.untimed_reason(doc, ctx()) is not None and jd.untimed_reason(doc, ctx(update="perf")) is None
    assert jd.untimed_reason(None, ctx()) is None


def test_a_perf_only_regression_is_accepted_with_perf():
    entry = {"cpu-x": {"metrics": {"t": jd.metric(1.0, 0.25, "lower")}}}
    doc = {**stored(perf=entry), "metrics": {"m": jd.metric(1, 0, "equal")}}
    slow = jd.Measured({"m": jd.metric(1, 0, "equal")}, perf={"t": jd.metric(2.0, 0.25, "lower")})
    assert jd.judge(doc, slow, ctx(), SCHEMA).fail.endswith("--kvcheck-update=perf")


@pytest.mark.parametrize("direction, base, now, status", [
    ("higher", 1.0, 0.8, "regressed"), ("higher", 1.0, 1.2, "improved"), ("lower", 1.0, 1.2, "regressed"),
    ("lower", 1.0, 0.8, "improved"), ("equal", 1.0, 1.2, "regressed"), ("equal", 1.0, 0.8, "regressed"),
    ("equal", 1.0, 1.05, "ok")])
def test_directions(direction, base, now, status):
    row = jd.compare_metric("m", jd.metric(base, 0.1, direction), now, "x", "s")
    assert row.status == status


def test_flips_are_one_implementation():
    f = jd.flips({"2": True, "10": True, "a": False}, {"2": False, "10": False, "a": True, "b": True})
    assert (f.lost, f.gained, f.missing) == (["2", "10"], ["a"], ["b"])
    assert jd.flipped({"x": {"correct": True}}, {"x": {"correct": False}}) == (["x"], [])


# ---- counted work: stored per software path ------------------------------------------------------

def _work(ops=100.0):
    return {"work.prefill.method_ops": jd.metric(ops, 0.02 * ops, "lower")}


def test_counted_work_is_judged_on_its_software_path_and_gives_the_verdict_without_timings():
    doc = {**stored(), "metrics": {"m": jd.metric(1, 0, "equal")}, "work": {"cpu-sdpa": {"metrics": _work()}}}
    m = lambda ops: jd.Measured({"m": jd.metric(1, 0, "equal")}, work=_work(ops), skip_reason="no perf entry")  # noqa: E731
    ok = jd.judge(doc, m(100.0), ctx(software="cpu-sdpa"), SCHEMA)
    assert ok.fail is None and ok.skip is None  # the work verdict stands; missing timings do not skip it
    bad = jd.judge(doc, m(103.0), ctx(software="cpu-sdpa"), SCHEMA)
    assert "regressed in accuracy on work.prefill.method_ops" in bad.fail and bad.fail.endswith("--kvcheck-update=all")
    other = jd.judge(doc, m(300.0), ctx(software="cuda-flash"), SCHEMA)
    assert other.fail is None and "no counted-work baseline for software path 'cuda-flash'" in other.skip


def test_counted_work_entries_are_added_per_path_and_kept_for_other_paths():
    doc = {**stored(), "metrics": {"m": jd.metric(1, 0, "equal")}, "work": {"cpu-sdpa": {"metrics": _work()}}}
    m = jd.Measured({"m": jd.metric(1, 0, "equal")}, work=_work(50.0))
    new = jd.judge(doc, m, ctx(software="cuda-flash", update="new"), SCHEMA)
    assert new.fail is None and new.skip is None
    assert set(new.write["work"]) == {"cpu-sdpa", "cuda-flash"} and new.write["work"]["cpu-sdpa"] == doc["work"]["cpu-sdpa"]
    rewritten = jd.judge(doc, m, ctx(software="cpu-sdpa", update="all"), SCHEMA)
    assert rewritten.write["work"]["cpu-sdpa"]["metrics"] == _work(50.0)
    assert jd.judge(doc, jd.Measured({"m": jd.metric(1, 0, "equal")}, work=_work()), ctx(software="cpu-sdpa", update="all"),
                    SCHEMA).write is None  # nothing moved: nothing written
    first = jd.judge(None, m, ctx(software="cpu-sdpa", update="new"), SCHEMA)
    assert first.write["work"] == {"cpu-sdpa": {"metrics": _work(50.0), "provenance": {"written": "now"}}}


def test_a_timing_tolerance_is_the_wider_of_the_stored_and_this_runs_own_error():
    entry = {"cpu-x": {"metrics": {"t": jd.metric(1.0, 0.05, "lower")}}}
    doc = {**stored(perf=entry), "metrics": {"m": jd.metric(1, 0, "equal")}}
    noisy = jd.Measured({"m": jd.metric(1, 0, "equal")}, perf={"t": jd.metric(1.2, 0.3, "lower")})  # A/A says ±0.3
    quiet = jd.Measured({"m": jd.metric(1, 0, "equal")}, perf={"t": jd.metric(1.2, 0.01, "lower")})
    assert jd.judge(doc, noisy, ctx(), SCHEMA).fail is None
    assert "regressed in accuracy on t" in jd.judge(doc, quiet, ctx(), SCHEMA).fail


def test_only_a_timing_failure_is_measured_again():
    from kvcheck.gate import timing_suspect

    entry = {"cpu-x": {"metrics": {"t": jd.metric(1.0, 0.05, "lower")}}}
    doc = {**stored(perf=entry), "metrics": {"m": jd.metric(1, 0, "equal")}}
    slow = jd.Measured({"m": jd.metric(1, 0, "equal")}, perf={"t": jd.metric(2.0, 0.01, "lower")})
    broken = jd.Measured({"m": jd.metric(2, 0, "equal")}, perf={"t": jd.metric(2.0, 0.01, "lower")})
    assert timing_suspect(jd.judge(doc, slow, ctx(), SCHEMA), slow)
    assert not timing_suspect(jd.judge(doc, broken, ctx(), SCHEMA), broken)  # a real metric failed too
    ok = jd.Measured({"m": jd.metric(1, 0, "equal")}, perf={"t": jd.metric(1.0, 0.01, "lower")})
    assert not timing_suspect(jd.judge(doc, ok, ctx(), SCHEMA), ok)


def _ref(expected: str, correct=True) -> dict:
    return {**rec(correct), "expected": expected}


def test_a_changed_reference_fails_as_the_engine_changed_in_either_direction():
    """``expected`` is what full (drift) or the task (accuracy) gives: the same for every method. When it
    moves on more samples than another float path explains, the engine, model or task set changed."""
    base = {f"p{i}": _ref(str(40 + i)) for i in range(32)}
    shorter = {f"p{i}": _ref(str(39 + i)) for i in range(32)}  # every reference answer one token shorter
    v = jd.judge(stored(samples=base), measured(samples=shorter), ctx(), SCHEMA)
    assert v.fail.startswith("kvcheck: snapkv-r0.5 changed in accuracy on reference.changed")
    assert "the reference changed" in v.fail and "on 32 of 32 samples" in v.fail and "'40', now '39'" in v.fail
    row = next(r for r in v.rows if r.metric == "reference.changed")
    assert (row.now, row.status) == (32, "changed")
    longer = {f"p{i}": _ref(str(41 + i)) for i in range(32)}
    assert jd.judge(stored(samples=base), measured(samples=longer), ctx(), SCHEMA).fail


def test_a_reference_moved_on_a_few_samples_is_another_float_path_and_passes():
    base = {f"p{i}": _ref(str(40 + i)) for i in range(32)}
    now = {**base, "p3": _ref("12")}
    m = jd.Measured({"passkey.accuracy": jd.metric(0.75, 0.125, "higher")}, samples=now, flip_rate=0.01, alpha=0.01)
    v = jd.judge(stored(samples=base), m, ctx(), SCHEMA)
    assert v.fail is None
    row = next(r for r in v.rows if r.metric == "reference.changed")
    assert (row.now, row.tolerance, row.status) == (1, 2, "ok")
    now3 = {**now, "p4": _ref("1"), "p5": _ref("2")}
    m3 = jd.Measured(m.metrics, samples=now3, flip_rate=0.01, alpha=0.01)
    assert "on 3 of 32 samples (allowed 2" in jd.judge(stored(samples=base), m3, ctx(), SCHEMA).fail


def test_the_reference_methods_rows_fail_when_they_move_either_way():
    doc = {**stored(0.5), "key": {"suite": "accuracy", "method_id": "full"}}
    v = jd.judge(doc, measured(0.875), ctx(method_id="full", reference=True), SCHEMA)
    assert v.rows[0].status == "changed"
    assert v.fail.startswith("kvcheck: full changed in accuracy on passkey.accuracy")
    assert "full is the reference" in v.fail and "either direction" in v.fail
    # any other method improving passes
    assert jd.judge(stored(0.5), measured(0.875), ctx(), SCHEMA).fail is None


def test_update_new_adds_metrics_the_baseline_predates_and_moves_none():
    m = jd.Measured({"passkey.accuracy": jd.metric(0.5, 0.125, "higher"),
                     "kv_peak_ratio": jd.metric(0.25, 0.01, "lower")})
    v = jd.judge(stored(0.75), m, ctx(update="new"), SCHEMA)
    assert v.fail.startswith("kvcheck: snapkv-r0.5 regressed in accuracy on passkey.accuracy")  # new accepts no move
    assert v.write["metrics"]["passkey.accuracy"]["value"] == 0.75  # the stored value stays
    assert v.write["metrics"]["kv_peak_ratio"] == jd.metric(0.25, 0.01, "lower")
    assert v.write["provenance"]["metrics_added"]["names"] == ["kv_peak_ratio"]
    assert [r.status for r in v.rows] == ["regressed", "new"]  # shown, and a regression still reported
    plain = jd.judge(stored(0.75), m, ctx(), SCHEMA)
    assert plain.write is None and [r.status for r in plain.rows] == ["regressed", "new"]


def test_a_row_at_the_end_of_its_range_cannot_fail_and_is_not_counted_as_passed():
    def at(acc):
        m = measured(acc)
        m.bounds = {"passkey.accuracy": (0.0, 1.0)}
        return jd.judge(stored(acc), m, ctx(), SCHEMA).rows[0].status
    assert at(0.0) == "cannot-fail" and at(0.125) == "cannot-fail"  # one sample of slack from 0: nothing below
    assert at(0.25) == "ok" and at(1.0) == "ok"
    low = jd.Row("m", "drift", "share_hit_cap", 0.95, 0.95, 0.0, 0.0625, "lower", "ok")
    assert jd.cannot_fail(low, (0.0, 1.0)) and not jd.cannot_fail(low, None)
    assert not jd.cannot_fail(jd.Row("m", "drift", "share_hit_cap", 0.5, 0.5, 0.0, 0.0625, "lower", "ok"), (0.0, 1.0))


def _task(rights: list[bool], stable: list[bool] | None = None) -> dict:
    out = {}
    for i, right in enumerate(rights):
        r = rec(right)
        if stable is not None:
            r["stable"] = stable[i]
        out[f"passkey-{i:03d}"] = r
    return out


def test_a_method_fallen_to_randoms_level_fails_naming_the_task_and_counts():
    random_base = _task([True, True, False, False, False, False, False, False])  # random: 2 of 8
    base = _task([True, True, True, False, False, False, False, False])  # the method beat it: 3 of 8
    now = _task([True, True, False, False, False, False, False, False])  # one flip, within every other tolerance
    v = jd.judge(stored(0.375, base), measured(0.25, now, allowance=1), ctx(ratio=0.5), SCHEMA, random_base=random_base)
    row = next(r for r in v.rows if r.metric == "passkey.beats_random")
    assert row.status == "regressed" and row.baseline == 1 / 8 and row.now == 0.0
    assert v.fail and "passkey.beats_random" in v.fail
    assert "2 of 8 right, random at r0.5 2 of 8 (the baseline had 3)" in v.fail
    # the same run with the method still ahead passes
    v = jd.judge(stored(0.375, base), measured(0.375, base), ctx(ratio=0.5), SCHEMA, random_base=random_base)
    assert v.fail is None and [r.status for r in v.rows if r.metric.endswith("beats_random")] == ["ok"]


def test_a_method_that_never_beat_random_is_listed_not_passed_and_unstable_flips_are_noise():
    random_base = _task([True, True, True, False])
    base = _task([True, True, False, False])  # below random when recorded
    v = jd.judge(stored(0.5, base), measured(0.5, base), ctx(ratio=0.75), SCHEMA, random_base=random_base)
    assert [r.status for r in v.rows if r.metric.endswith("beats_random")] == ["below-random"] and v.fail is None
    # a flip of a sample that was unstable when recorded counts as it was then
    base = _task([True, True, True, True], stable=[True, True, True, False])
    now = _task([True, True, True, False])
    random_base = _task([True, True, True, False])
    rows, text = jd.versus_random(["passkey"], base, now, random_base, "m", "accuracy", 0.5)
    assert rows[0].status == "ok" and rows[0].now == 0.25 and text == ""
