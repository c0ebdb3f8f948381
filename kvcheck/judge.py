"""Judging, as pure functions: no IO, no pytest, no torch.

A stored metric is ``{"value", "tolerance", "direction"}``; :func:`compare` turns stored and measured
metrics into :class:`Row` s, and :func:`judge` turns a stored baseline and a :class:`Measured` into a
:class:`Verdict`: pass, fail (with the message that names the metric, the numbers and the samples) or
skip, plus the document to write under the update mode.

Flips: which samples a method turns right → wrong (``lost``) and wrong → right (``gained``) against
a baseline's per-sample correctness. The one implementation the gate, ``kvcheck samples`` and the
report share.
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import asdict, dataclass, field

from .tables import Column, number, render


def id_key(i) -> tuple:
    """Sort key: numeric ids in numeric order, then the rest as text."""
    s = str(i)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


@dataclass(frozen=True)
class Flips:
    lost: list  # right under the baseline, wrong under the method
    gained: list  # wrong under the baseline, right under the method
    missing: list  # ids judged on one side only; not counted as flips


def flips(baseline: Mapping[Hashable, bool], method: Mapping[Hashable, bool]) -> Flips:
    """Per-sample correctness of a method against the baseline's, id by id."""
    common = baseline.keys() & method.keys()
    lost = [i for i in common if baseline[i] and not method[i]]
    gained = [i for i in common if not baseline[i] and method[i]]
    missing = list(baseline.keys() ^ method.keys())
    return Flips(*(sorted(x, key=id_key) for x in (lost, gained, missing)))


# ---- metrics and rows ------------------------------------------------------------------------------

DIRECTIONS = ("higher", "lower", "equal")  # higher / lower is better; equal: any move beyond tolerance
# the summary table's order; below-random: an eviction method that does not beat random at its ratio on a
# task when its baseline was recorded (listed, never counted as a passed gate)
STATUSES = ("regressed", "changed", "missing", "new", "improved", "cannot-fail", "below-random", "ok")
FAILING = ("regressed", "changed", "missing")  # changed: the reference's own row moved, in either direction


def metric(value: float | None, tolerance: float | None, direction: str, noise: float | None = None) -> dict:
    """A stored metric: value and tolerance rounded to 6 digits, which way is better, and (when the
    baseline measured it) the noise floor: the largest move benign perturbations caused."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    out = {"value": _num(value), "tolerance": _num(tolerance), "direction": direction}
    if noise is not None:
        out["noise"] = _num(noise)
    return out


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), exactly."""
    if k <= 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def flip_allowance(n: int, flip_rate: float, alpha: float) -> int:
    """The most right → wrong flips among ``n`` stable samples that clean code explains: the smallest
    a with P(more than a flips) ≤ ``alpha`` when each stable sample flips with ``flip_rate``. One
    more fails the gate, so clean code fails it at most ``alpha`` of the time."""
    a = 0
    while binomial_tail(n, flip_rate, a + 1) > alpha:
        a += 1
    return a


def _num(v):
    return None if v is None else round(float(v), 6)


@dataclass
class Row:
    """One comparison: what the summary table and the JSON report show. ``method_name`` and ``params``
    say which method and settings ``method`` (the id) stands for, so nothing parses ids back."""
    method: str
    suite: str
    metric: str
    baseline: float | None
    now: float | None
    delta: float | None
    tolerance: float | None
    direction: str
    status: str  # one of STATUSES
    method_name: str = ""
    params: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def status_order(status: str) -> int:
    return STATUSES.index(status) if status in STATUSES else len(STATUSES)


def compare_metric(name: str, spec: dict, now: float | None, method: str, suite: str) -> Row:
    base, tol, direction = spec.get("value"), spec.get("tolerance") or 0.0, spec["direction"]
    if now is None or base is None:
        status = "missing" if now is None else "new"
        return Row(method, suite, name, base, now, None, tol, direction, status)
    delta = now - base
    if isinstance(now, float) and not math.isfinite(now):
        status = "regressed"
    elif direction == "higher":
        status = "regressed" if delta < -tol - 1e-12 else ("improved" if delta > tol + 1e-12 else "ok")
    elif direction == "lower":
        status = "regressed" if delta > tol + 1e-12 else ("improved" if delta < -tol - 1e-12 else "ok")
    else:
        status = "regressed" if abs(delta) > tol + 1e-12 else "ok"
    return Row(method, suite, name, base, now, delta, tol, direction, status)


def compare(baseline_metrics: Mapping, now: Mapping, method: str, suite: str) -> list[Row]:
    """Every stored metric against its current value (absent now → ``missing``, a regression), and
    current metrics the baseline lacks as ``new``."""
    rows = [compare_metric(n, spec, now.get(n, {}).get("value"), method, suite)
            for n, spec in sorted(baseline_metrics.items())]
    for n in sorted(set(now) - set(baseline_metrics)):
        rows.append(Row(method, suite, n, None, now[n]["value"], None, now[n]["tolerance"],
                        now[n]["direction"], "new"))
    return rows


def flipped(baseline_samples: Mapping, now_samples: Mapping) -> tuple[list[str], list[str]]:
    """(right→wrong ids, wrong→right ids) between two per-sample record maps (``correct`` field)."""
    common = baseline_samples.keys() & now_samples.keys()
    f = flips({i: bool(baseline_samples[i].get("correct")) for i in common},
              {i: bool(now_samples[i].get("correct")) for i in common})
    return f.lost, f.gained


ROW_COLUMNS = (
    Column("metric", "metric", 34),
    Column("baseline", "baseline", 10, ">", number()),
    Column("now", "now", 10, ">", number()),
    Column("Δ", "delta", 10, ">", number()),
    Column("tolerance", "tolerance", 10, ">", lambda t: "-" if t is None else f"±{t:.4g}"),
    Column("status", lambda r: r.status if r.direction == "equal" else f"{r.status} ({r.direction} is better)", gap=2),
)


def format_rows(rows: list[Row]) -> str:
    """The rows of a failure message."""
    return "\n".join(render(ROW_COLUMNS, rows, indent="  ", rule=None))


# ---- verdicts --------------------------------------------------------------------------------------

@dataclass
class Measured:
    """What a suite measured for one method, ready to judge."""
    metrics: dict  # name -> metric(value, tolerance, direction)
    samples: dict | None = None  # id -> per-sample record (accuracy-like suites)
    perf: dict | None = None  # name -> metric, machine-specific
    details: dict = field(default_factory=dict)  # stored for inspection, never compared
    sample_allowance: int = 0  # right→wrong flips always tolerated
    flip_rate: float | None = None  # with alpha: the binomial flip test (see flip_allowance)
    alpha: float | None = None
    skip_reason: str | None = None  # throughput: why timings were not measured (the test then skips)
    work: dict | None = None  # name -> metric, counted work: stored per software path
    bounds: dict = field(default_factory=dict)  # name -> (lowest, highest) value the metric can take


def cannot_fail(row: Row, bounds: tuple | None) -> bool:
    """Whether a row's baseline sits so near the end of its range that no value could regress it
    (an accuracy of 0, or of 1/8 with one sample of slack): such a row is not a passed gate."""
    if bounds is None or row.baseline is None or row.tolerance is None:
        return False
    lo, hi = bounds
    if row.direction == "higher":
        return row.baseline - row.tolerance <= lo + 1e-12
    if row.direction == "lower":
        return row.baseline + row.tolerance >= hi - 1e-12
    return False


@dataclass(frozen=True)
class Context:
    """Everything judging needs besides the two documents. ``header`` is the stored ``key`` object,
    ``provenance`` what a written file records, ``accept`` the command prefix of the accept hint."""
    suite: str
    method_id: str
    header: Mapping
    path: str
    machine: str
    provenance: Mapping
    accept: str
    update: str | None = None  # None | "new" | "all" | "perf"
    strict_perf: bool = False
    software: str = ""  # the software path counted work is stored under (kvcheck.machine.software_key)
    reference: bool = False  # the method is the reference (full): its rows measure the engine, any move fails
    ratio: float = 0.0  # an eviction method's compression_ratio (named in the beats-random message)


@dataclass
class Verdict:
    """The outcome of one check: ``fail`` (message) or ``skip`` (reason) or neither (passed); the rows
    for the table; the document to write, if any."""
    rows: list = field(default_factory=list)
    fail: str | None = None
    skip: str | None = None
    write: dict | None = None


def document(ctx: Context, measured: Measured, schema: int) -> dict:
    """The baseline file a measurement becomes."""
    data = {"schema": schema, "key": dict(ctx.header), "provenance": dict(ctx.provenance),
            "metrics": measured.metrics, "details": measured.details}
    if measured.samples is not None:
        data["samples"] = measured.samples
    if measured.perf is not None:
        data["perf"] = {ctx.machine: {"metrics": measured.perf, "provenance": dict(ctx.provenance)}}
    if measured.work is not None:
        data["work"] = {ctx.software: _work_entry(ctx, measured)}
    return data


def _work_entry(ctx: Context, measured: Measured) -> dict:
    return {"metrics": measured.work, "provenance": dict(ctx.provenance)}


def untimed_reason(stored: Mapping | None, ctx: Context) -> str | None:
    """Why timings would not be judged (the baseline has no perf entry for this machine, and neither
    ``--kvcheck-update=perf`` nor strict perf is on), or None when they would be: then measure them."""
    if ctx.update == "perf" or ctx.strict_perf:
        return None
    if stored is None or (stored.get("perf") or {}).get(ctx.machine) is not None:
        return None  # a new baseline records this machine's timings; an existing entry is judged
    return (f"no perf baseline for machine {ctx.machine!r} (timings not measured; KV bytes gated); "
            "record one with --kvcheck-update=perf on this machine")


def versus_random(tasks: list[str], base: Mapping, now: Mapping, random_base: Mapping, method: str,
                  suite: str, ratio: float) -> tuple[list[Row], str]:
    """Does an eviction method beat ``random`` at its ratio, per task? (rows ``<task>.beats_random``, the
    message of those that fail.)

    ``base`` / ``now``: the method's per-sample records (baseline, this run), ``random_base`` random's
    committed baseline at the same ratio; a sample belongs to task t when its id starts with ``t-``. The
    margin is (right − random's right) / samples. A sample that was unstable when the method's baseline
    was recorded counts as it was then (its flips are noise). Where the baseline's margin was > 0 and
    this run's is ≤ 0, the method fell to random's level: ``regressed``. Where the baseline's margin was
    ≤ 0, the row is ``below-random``: it gates nothing, and the table says so."""
    rows, lines = [], []
    for task in tasks:
        ids = sorted(i for i in base if i.startswith(task + "-") and i in now and i in random_base)
        if not ids:
            continue
        n = len(ids)
        right_random = sum(bool(random_base[i].get("correct")) for i in ids)
        right_base = sum(bool(base[i].get("correct")) for i in ids)
        right_now = sum(bool(base[i].get("correct") if base[i].get("stable") is False else now[i].get("correct"))
                        for i in ids)
        was, margin = (right_base - right_random) / n, (right_now - right_random) / n
        status = "below-random" if was <= 0 else ("regressed" if margin <= 0 else "ok")
        rows.append(Row(method, suite, f"{task}.beats_random", was, margin, margin - was, 0.0, "higher", status))
        if status == "regressed":
            lines.append(f"  {task}: {right_now} of {n} right, random at r{ratio:g} {right_random} of {n} "
                         f"(the baseline had {right_base}): no better than evicting at random")
    return rows, "\n".join(lines)


def reference_changes(base_samples: Mapping, now_samples: Mapping) -> list[str]:
    """Ids whose reference output (``expected``: full's output for drift, the task's answer for
    accuracy) differs from the baseline's, in either direction."""
    return sorted((i for i in base_samples.keys() & now_samples.keys()
                   if "expected" in base_samples[i] and "expected" in now_samples[i]
                   and str(base_samples[i]["expected"]) != str(now_samples[i]["expected"])), key=id_key)


def _reference_lines(base: Mapping, now: Mapping, ids: list[str], limit: int = 8) -> str:
    out = [f"    {sid}: baseline {base[sid]['expected']!r}, now {now[sid]['expected']!r}" for sid in ids[:limit]]
    if len(ids) > limit:
        out.append(f"    … and {len(ids) - limit} more")
    return "\n".join(out)


def _flip_lines(base_samples: Mapping, now_samples: Mapping, ids: list[str], limit: int = 8) -> str:
    out = []
    for sid in ids[:limit]:
        b, n = base_samples[sid], now_samples[sid]
        out.append(f"    {sid}: expected {b.get('expected')!r}, baseline got {b.get('got')!r}, now {n.get('got')!r}")
    if len(ids) > limit:
        out.append(f"    … and {len(ids) - limit} more")
    return "\n".join(out)


def judge(stored: Mapping | None, measured: Measured, ctx: Context, schema: int,
          random_base: Mapping | None = None) -> Verdict:
    """Judge a measurement against the stored baseline (None: there is none) under the update mode.
    ``random_base``: random's committed per-sample records at the method's ratio (:func:`versus_random`;
    given for eviction methods in accuracy suites)."""
    suite, mid, update = ctx.suite, ctx.method_id, ctx.update
    if stored is not None and (stored["key"].get("method_id"), stored["key"].get("suite")) != (mid, suite):
        return Verdict(fail=f"kvcheck: baseline {ctx.path} holds {stored['key'].get('method_id')!r} in "
                            f"{stored['key'].get('suite')!r}, not {mid!r} in {suite!r} (copied or renamed by hand?); "
                            "restore it from version control, or delete it and rerun with --kvcheck-update=new.")
    broken = sorted(n for n, m in {**measured.metrics, **(measured.perf or {}), **(measured.work or {})}.items()
                    if m.get("value") is not None and not math.isfinite(m["value"]))
    if broken:
        return Verdict(rows=compare(stored["metrics"] if stored else {}, measured.metrics, mid, suite),
                       fail=f"kvcheck: {mid} measured a non-finite {', '.join(broken)} in {suite}; nothing was "
                            "written. A method that yields NaN or inf is broken: fix it, then rerun.")
    if stored is None:
        rows = (compare({}, measured.metrics, mid, suite) + compare({}, measured.perf or {}, mid, suite)
                + compare({}, measured.work or {}, mid, suite))
        fail = None if update in ("new", "all") else (
            f"kvcheck: no baseline for {mid} in {suite}; new baseline written to {ctx.path}. "
            "Review it and commit it (or run with --kvcheck-update=new to accept new baselines).")
        return Verdict(rows=rows, fail=fail, write=document(ctx, measured, schema))

    rows = compare(stored["metrics"], measured.metrics, mid, suite)
    for r in rows:
        if r.status == "ok" and cannot_fail(r, measured.bounds.get(r.metric)):
            r.status = "cannot-fail"
    samples_over, flip_text, ref_over, ref_text = False, "", False, ""
    if measured.samples is not None and isinstance(stored.get("samples"), dict):
        base = stored["samples"]
        rw, wr = flipped(base, measured.samples)
        unstable = [i for i in rw if base[i].get("stable") is False]
        counted = [i for i in rw if base[i].get("stable") is not False]
        n_stable = sum(1 for i in base.keys() & measured.samples.keys() if base[i].get("stable") is not False)
        allowed = measured.sample_allowance
        if measured.flip_rate is not None:
            allowed = max(allowed, flip_allowance(n_stable, measured.flip_rate, measured.alpha))
        samples_over = len(counted) > allowed
        rows.append(Row(mid, suite, "samples.right_to_wrong", 0, len(counted), len(counted), allowed,
                        "lower", "regressed" if samples_over else "ok"))
        if rw:
            test = ""
            if measured.flip_rate is not None:
                test = (f" of {n_stable} stable; P(≥ {len(counted)} | {measured.flip_rate:.0%} per stable sample) = "
                        f"{binomial_tail(n_stable, measured.flip_rate, len(counted)):.2g}")
            flip_text = (f"  samples right→wrong: {len(counted)}{test} (allowed {allowed}); wrong→right: {len(wr)}\n"
                         + _flip_lines(base, measured.samples, counted))
            if unstable:
                flip_text += (f"\n  not counted (unstable under perturbation when recorded): "
                              f"{', '.join(unstable[:8])}{' …' if len(unstable) > 8 else ''}")
        changed = reference_changes(base, measured.samples)
        common = len(base.keys() & measured.samples.keys())
        allowed = flip_allowance(common, measured.flip_rate, measured.alpha) if measured.flip_rate is not None else 0
        ref_over = len(changed) > allowed
        rows.append(Row(mid, suite, "reference.changed", 0, len(changed), len(changed), allowed,
                        "lower", "changed" if ref_over else "ok"))
        if ref_over:
            ref_text = (f"  the reference changed: what full (or the task) gives differs from the baseline on "
                        f"{len(changed)} of {common} samples (allowed {allowed}, another float path). The engine, "
                        f"the model or the task set changed, not only {mid}; every method's rows moved with it:\n"
                        + _reference_lines(base, measured.samples, changed) + "\n")
    random_text = ""
    if random_base and measured.samples is not None and isinstance(stored.get("samples"), dict):
        tasks = sorted(n[:-len(".accuracy")] for n in stored["metrics"] if n.endswith(".accuracy"))
        random_rows, random_text = versus_random(tasks, stored["samples"], measured.samples, random_base, mid, suite,
                                                 ctx.ratio)
        rows += random_rows
    if ctx.reference:  # full's own rows measure the engine: a move either way is a change
        for r in rows:
            if r.status == "improved":
                r.status = "changed"
    perf_rows, perf_note = [], None
    if measured.perf is not None:
        entry = (stored.get("perf") or {}).get(ctx.machine)
        if entry is None:
            perf_note = (f"no perf baseline for machine {ctx.machine!r} in {ctx.path}; "
                         "record one with --kvcheck-update=perf on this machine")
        else:  # a timing's tolerance: the stored one or this run's own (A/A) error, whichever is wider
            base = {n: {**spec, "tolerance": max(spec.get("tolerance") or 0.0,
                                                 (measured.perf.get(n) or {}).get("tolerance") or 0.0)}
                    for n, spec in entry["metrics"].items()}
            perf_rows = compare(base, measured.perf, mid, suite)
    elif measured.skip_reason:
        perf_note = measured.skip_reason
    rows += perf_rows
    work_rows, work_note = [], None
    if measured.work is not None:
        entry = (stored.get("work") or {}).get(ctx.software)
        if entry is None:
            work_note = (f"no counted-work baseline for software path {ctx.software!r} in {ctx.path} (work not "
                         "gated); record one with --kvcheck-update=new on this path")
        else:
            work_rows = compare(entry["metrics"], measured.work, mid, suite)
    rows += work_rows
    verdict = Verdict(rows=rows)
    if update == "all":
        data = document(ctx, measured, schema)
        data["perf"] = stored.get("perf") or {}  # perf is only ever written with --kvcheck-update=perf
        if measured.work is not None:  # this path's entry rewritten, the other paths' kept
            data["work"] = {**(stored.get("work") or {}), ctx.software: _work_entry(ctx, measured)}
        if any(data.get(k) != stored.get(k) for k in ("metrics", "samples", "details")) or (
                measured.work is not None and (stored.get("work") or {}).get(ctx.software, {}).get("metrics")
                != measured.work):
            verdict.write = data
        return verdict
    added = sorted(set(measured.metrics) - set(stored["metrics"]))
    if added and update == "new":  # metrics this baseline predates are recorded; stored ones never move
        verdict.write = {**stored, "metrics": {**stored["metrics"], **{n: measured.metrics[n] for n in added}},
                         "provenance": {**stored.get("provenance", {}), "metrics_added": {
                             "names": added, **{k: v for k, v in ctx.provenance.items() if k in ("git_sha", "written")}}}}
    if work_note and update in ("new", "perf"):  # a missing entry is a missing baseline: record it
        data = dict(verdict.write or stored)
        data["work"] = {**(stored.get("work") or {}), ctx.software: _work_entry(ctx, measured)}
        verdict.write, work_note = data, None
    if update == "perf" and measured.perf is not None:
        data = dict(verdict.write or stored)
        data["perf"] = {**(stored.get("perf") or {}),
                        ctx.machine: {"metrics": measured.perf, "provenance": dict(ctx.provenance)}}
        verdict.write = data
        perf_rows, perf_note = [], None
    bad = [r for r in rows if r.status in FAILING and r.metric not in ("samples.right_to_wrong", "reference.changed")]
    only_perf = bool(bad) and all(r in perf_rows for r in bad) and not samples_over and not ref_over
    if bad or samples_over or ref_over:
        shown = [r for r in rows if r.status in FAILING]
        names = ", ".join(sorted({r.metric for r in shown}))
        what = "changed" if ref_over or any(r.status == "changed" for r in shown) else "regressed"
        note = (f"  {mid} is the reference: its rows measure kvcheck's engine and the model, so a move in "
                "either direction fails\n") if ctx.reference and any(r.status == "changed" for r in shown) else ""
        verdict.fail = (f"kvcheck: {mid} {what} in {suite} on {names}\n"
                        f"  baseline: {ctx.path}\n{format_rows(shown)}\n" + ref_text + note
                        + (flip_text + "\n" if flip_text else "") + (random_text + "\n" if random_text else "")
                        + f"  if the change is intended, accept it with: {ctx.accept}"
                        + ("perf" if only_perf else "all"))
    elif work_note or (perf_note and (not work_rows or ctx.strict_perf)):
        # counted work judged here is the throughput verdict: missing timings alone then do not skip it
        note = "; ".join(n for n in (work_note, perf_note) if n)
        if ctx.strict_perf:
            verdict.fail = f"kvcheck: {note}"
        else:
            verdict.skip = note
    return verdict
