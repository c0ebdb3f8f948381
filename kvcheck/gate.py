"""The one regression check every suite calls (``perform_regression_check`` in spirit).

It compares a :class:`~kvcheck.runner.Measured` with the stored baseline, queues writes per the
update mode, records the comparison rows for the summary table, and fails the test with a message
naming the metric, the numbers and the samples.
"""
from __future__ import annotations

import datetime
import math
import platform
import subprocess

import pytest

from . import baseline as bl


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except Exception:
        return None


def provenance(session) -> dict:
    import torch
    import transformers

    from . import __version__

    return {"kvcheck": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "device": session.device_name, "git_sha": _git_sha(),
            "written": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _file(session, suite, method, measured) -> dict:
    data = {"schema": bl.SCHEMA,
            "key": {"model": session.model_name, "tier": session.tier.name, "dtype": session.dtype_name,
                    "suite": suite, "method": method.name, "method_id": method.id,
                    "params": {k: v for k, v in method.params().items()}},
            "provenance": provenance(session), "metrics": measured.metrics, "details": measured.details}
    if measured.samples is not None:
        data["samples"] = measured.samples
    if measured.perf is not None:
        data["perf"] = {session.machine_key: {"metrics": measured.perf, "provenance": provenance(session)}}
    return data


def _flip_lines(base_samples: dict, now_samples: dict, ids: list[str], limit: int = 8) -> str:
    out = []
    for sid in ids[:limit]:
        b, n = base_samples[sid], now_samples[sid]
        out.append(f"    {sid}: expected {b.get('expected')!r}, baseline got {b.get('got')!r}, now {n.get('got')!r}")
    if len(ids) > limit:
        out.append(f"    … and {len(ids) - limit} more")
    return "\n".join(out)


def untimed_reason(session, suite: str, method) -> str | None:
    """Why timings would not be judged in this run (the baseline has no perf entry for this machine and
    neither ``--kvcheck-update=perf`` nor strict perf is on), or None when they would be: then measure them."""
    if session.update == "perf" or session.strict_perf:
        return None
    try:
        base = bl.load(bl.baseline_path(session.baseline_dir, session.model_name, session.tier.name,
                                        session.dtype_name, suite, method.id))
    except bl.BaselineError:
        return None  # check() reports it
    if base is None or (base.get("perf") or {}).get(session.machine_key) is not None:
        return None  # a new baseline records this machine's timings; an existing entry is judged
    return (f"no perf baseline for machine {session.machine_key!r} (timings not measured; KV bytes gated); "
            "record one with --kvcheck-update=perf on this machine")


def check(session, request, suite: str, method, measured) -> None:
    update = session.update
    if suite == "accuracy" and measured.samples:
        session.record_scores(request, method.id, {k: v["score"] for k, v in measured.samples.items()})
    try:
        path = bl.baseline_path(session.baseline_dir, session.model_name, session.tier.name, session.dtype_name,
                                suite, method.id)
        base = bl.load(path)
    except bl.BaselineError as exc:
        pytest.fail(f"kvcheck: {exc}", pytrace=False)
    if base is not None and (base["key"].get("method_id"), base["key"].get("suite")) != (method.id, suite):
        pytest.fail(f"kvcheck: baseline {path} holds {base['key'].get('method_id')!r} in "
                    f"{base['key'].get('suite')!r}, not {method.id!r} in {suite!r} (copied or renamed by hand?); "
                    "restore it from version control, or delete it and rerun with --kvcheck-update=new.",
                    pytrace=False)
    broken = sorted(n for n, m in {**measured.metrics, **(measured.perf or {})}.items()
                    if m.get("value") is not None and not math.isfinite(m["value"]))
    if broken:
        session.record(request, bl.compare(base["metrics"] if base else {}, measured.metrics, method.id, suite))
        pytest.fail(f"kvcheck: {method.id} measured a non-finite {', '.join(broken)} in {suite}; nothing was "
                    "written. A method that yields NaN or inf is broken: fix it, then rerun.", pytrace=False)
    test_file = request.node.nodeid.split("::")[0]
    accept = f"pytest {test_file} -k '{method.id}' --kvcheck-update="

    if base is None:
        rows = bl.compare({}, measured.metrics, method.id, suite)
        if measured.perf:
            rows += bl.compare({}, measured.perf, method.id, suite)
        session.record(request, rows)
        session.queue_write(path, _file(session, suite, method, measured))
        if update in ("new", "all"):
            return
        pytest.fail(f"kvcheck: no baseline for {method.id} in {suite}; new baseline written to {path}. "
                    "Review it and commit it (or run with --kvcheck-update=new to accept new baselines).",
                    pytrace=False)

    rows = bl.compare(base["metrics"], measured.metrics, method.id, suite)
    problems = []
    flips = ""
    if measured.samples is not None and isinstance(base.get("samples"), dict):
        rw, wr = bl.flipped(base["samples"], measured.samples)
        over = len(rw) > measured.sample_allowance
        rows.append(bl.Row(method.id, suite, "samples.right_to_wrong", 0, len(rw), len(rw),
                           measured.sample_allowance, "lower", "regressed" if over else "ok"))
        if rw:
            flips = (f"  samples right→wrong: {len(rw)} (allowed {measured.sample_allowance}); "
                     f"wrong→right: {len(wr)}\n" + _flip_lines(base["samples"], measured.samples, rw))
        if over:
            problems.append("samples")

    perf_rows, perf_note = [], None
    if measured.perf is not None:
        entry = (base.get("perf") or {}).get(session.machine_key)
        if entry is None:
            perf_note = (f"no perf baseline for machine {session.machine_key!r} in {path}; "
                         "record one with --kvcheck-update=perf on this machine")
        else:
            perf_rows = bl.compare(entry["metrics"], measured.perf, method.id, suite)
    elif measured.skip_reason:
        perf_note = measured.skip_reason
    rows += perf_rows
    session.record(request, rows)

    if update == "all":
        data = _file(session, suite, method, measured)
        data["perf"] = base.get("perf") or {}  # perf is only ever written with --kvcheck-update=perf
        if data["metrics"] != base["metrics"] or data.get("samples") != base.get("samples") \
                or data.get("details") != base.get("details"):
            session.queue_write(path, data)
        return
    if update == "perf" and measured.perf is not None:
        data = dict(base)
        data["perf"] = dict(base.get("perf") or {})
        data["perf"][session.machine_key] = {"metrics": measured.perf, "provenance": provenance(session)}
        session.queue_write(path, data)
        perf_rows, perf_note = [], None

    bad = [r for r in rows if r.status in ("regressed", "missing") and r.metric != "samples.right_to_wrong"]
    bad_perf = [r for r in bad if r in perf_rows]
    if bad or problems:
        shown = [r for r in rows if r.status in ("regressed", "missing")]
        names = ", ".join(sorted({r.metric for r in shown}))
        msg = (f"kvcheck: {method.id} regressed in {suite} on {names}\n"
               f"  baseline: {path}\n{bl.format_rows(shown)}\n" + (flips + "\n" if flips else "") +
               f"  if the change is intended, accept it with: {accept}"
               + ("perf" if bad_perf and len(bad_perf) == len(bad) and not problems else "all"))
        pytest.fail(msg, pytrace=False)
    if perf_note:
        if session.strict_perf:
            pytest.fail(f"kvcheck: {perf_note}", pytrace=False)
        pytest.skip(perf_note)


def check_negatives(session):
    """The negative-sample gate (``--kvcheck-negatives``), on the controller after every accuracy
    test: judge this run's negative set against the stored one, queue writes per the update mode and
    add a row to the table. Returns the :class:`~kvcheck.negatives.Verdict` (None: nothing to judge)."""
    from . import negatives as neg

    scores = session.sample_scores
    if not scores:
        return None
    methods = sorted(scores)
    t, rule = session.negative_threshold, "seed"
    if neg.REFERENCE not in scores or len(scores) < 2:
        return neg.Verdict("skipped", [], [], "negative-sample gate skipped: it needs full and at least one "
                           f"compressed method in the accuracy suite; this run has {methods}")
    path = bl.baseline_path(session.baseline_dir, session.model_name, session.tier.name, session.dtype_name,
                            neg.SUITE, neg.FILE_ID)
    try:
        stored = bl.load(path)
    except bl.BaselineError as exc:
        return neg.Verdict("regressed", [], [], f"kvcheck: {exc}")
    datasets = neg.negatives(scores, t, rule)
    verdict = neg.judge(stored, methods, datasets, t, rule, scores)
    count = len(neg.all_negatives(datasets))
    before = None if stored is None else stored["metrics"]["negative_count"]["value"]
    session.rows.append(bl.Row("(every compressed method)", "accuracy", "negative_samples", before, count,
                               None if before is None else count - before, 0.0, "lower",
                               verdict.status if verdict.status != "skipped" else "ok").as_dict())
    key = {"model": session.model_name, "tier": session.tier.name, "dtype": session.dtype_name,
           "suite": neg.SUITE, "methods": methods, "threshold": t, "rule": rule}
    doc = neg.document(key, datasets, provenance(session))
    if stored is None:
        session.queue_write(path, doc)
        if session.update not in ("new", "all"):
            return neg.Verdict("new", verdict.added, [], f"kvcheck: no negative-sample baseline; written to {path}: "
                               f"{count} negatives. Review it and commit it.")
    elif session.update == "all" and verdict.status in ("regressed", "improved"):
        session.queue_write(path, doc)
        return neg.Verdict("ok", [], [], f"negative-sample baseline rewritten ({count} negatives): {path}")
    return verdict
