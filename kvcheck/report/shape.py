"""Data shaping, one function per figure (plus the regression table): pure functions from the loaded
:class:`~kvcheck.report.load.Inputs` to plain dicts and lists the plots draw."""
from __future__ import annotations

import re
import statistics

from .ids import REFERENCE, method_kind, method_order, nominal_kv_ratio, ratio, task_order
from .load import Inputs, is_num

CORRECT_AT = 0.5  # an eval record counts as right when its score reaches this (as the accuracy suite does)
_ACC_METRIC = re.compile(r"^(?P<task>.+)\.accuracy$")
_TP_METRIC = re.compile(r"^b(?P<batch>\d+)-L(?P<length>\d+)\.(?P<name>prefill_ratio|decode_ratio|compress_share|"
                        r"kv_ratio)$")


def measured_kv_ratios(inputs: Inputs) -> dict[str, float]:
    """Median kv_ratio per method over eval rows, report throughput rows and bench points."""
    seen: dict[str, list[float]] = {}
    for _, d in inputs.of("kvcheck-eval"):
        for r in d.get("rows", []):
            if is_num(r.get("kv_ratio")):
                seen.setdefault(r["method"], []).append(r["kv_ratio"])
    for _, d in inputs.of("kvcheck-report"):
        for r in d["rows"]:
            m = _TP_METRIC.match(r["metric"])
            if r["suite"] == "throughput" and m and m["name"] == "kv_ratio" and is_num(r.get("now")):
                seen.setdefault(r["method"], []).append(r["now"])
    for _, d in inputs.of("kvcheck-bench"):
        for p in d["points"]:
            if is_num(p.get("kv_ratio")):
                seen.setdefault(p["method"], []).append(p["kv_ratio"])
    return {m: statistics.median(v) for m, v in seen.items()}


def accuracy_data(inputs: Inputs) -> dict:
    """``{"tasks": {task: {method: {"accuracy", "baseline", "regressed"}}}, "x": {method: (x, source)},
    "notes": [...]}``; x is the compression ratio (fraction of the KV cache removed)."""
    tasks: dict[str, dict] = {}
    for m, metrics in inputs.accuracy_metrics.items():
        for name, value in metrics.items():
            tasks.setdefault(_ACC_METRIC.match(name)["task"], {})[m] = {"accuracy": value, "baseline": None,
                                                                       "regressed": False}
    for _, d in inputs.of("kvcheck-report"):
        for r in d["rows"]:
            hit = _ACC_METRIC.match(r["metric"])
            if r["suite"] == "accuracy" and hit and is_num(r.get("now")):
                tasks.setdefault(hit["task"], {})[r["method"]] = {
                    "accuracy": r["now"], "baseline": r.get("baseline"), "regressed": r["status"] == "regressed"}
    for _, d in inputs.of("kvcheck-eval"):
        task = f"{d['task']}-L{int(d['length'])}"
        for r in d.get("rows", []):
            if is_num(r.get("accuracy")):
                tasks.setdefault(task, {})[r["method"]] = {"accuracy": r["accuracy"], "baseline": None,
                                                          "regressed": False}
    kv = measured_kv_ratios(inputs)
    xs, notes = {}, []
    every = {m for t in tasks.values() for m in t}
    for m in sorted(every, key=lambda m: method_order(inputs.ref(m))):
        ref = inputs.ref(m)
        kind = method_kind(ref)
        if kind == "full":
            xs[m] = (0.0, "reference")
        elif kind == "eviction":
            xs[m] = (ratio(ref), "id")
        elif m in kv:
            xs[m] = (1.0 - kv[m], "measured kv_ratio")
        elif nominal_kv_ratio(ref) is not None:
            xs[m] = (1.0 - nominal_kv_ratio(ref), "nominal bits/16")
            notes.append(f"{m}: no measured kv_ratio in the inputs; placed at its nominal 1 − bits/16 = "
                         f"{xs[m][0]:.3g}")
        else:
            notes.append(f"{m}: no compression ratio in its id and no measured kv_ratio; left out of the accuracy plot")
    return {"tasks": {t: tasks[t] for t in sorted(tasks, key=task_order)}, "x": xs, "notes": notes,
            "refs": inputs.refs_of(every)}


def _diff_pct(full_len, method_len) -> float | None:
    if not is_num(full_len) or not is_num(method_len) or full_len <= 0:
        return None
    return (full_len - method_len) / full_len * 100.0


def drift_data(inputs: Inputs) -> dict:
    """``{"sources": {source: {method: [diff%, ...]}}, "medians": {method: median diff%}, "notes"}``.

    Per-request diffs come from drift baselines (their ``score``) and from eval records (output
    lengths against ``full``'s in the same file, pooled over the eval files); ``medians`` are the
    report's ``median_diff_pct``, drawn when no per-request data is given."""
    sources: dict[str, dict] = {}
    notes = []
    drift = {m: [s["score"] for s in samples.values() if is_num(s.get("score"))]
             for m, samples in inputs.drift_samples.items() if m != REFERENCE}
    drift = {m: v for m, v in drift.items() if v}
    if drift:
        sources["drift suite (stored baselines, open-ended prompts)"] = drift
    pooled: dict[str, list] = {}
    tasks = []
    for path, d in inputs.of("kvcheck-eval"):
        recs = d.get("records", {})
        if REFERENCE not in recs:
            if len(recs) > 0:
                notes.append(f"{path}: no {REFERENCE} records, so no length drift from it")
            continue
        full_len = {str(r["id"]): r.get("output_tokens") for r in recs[REFERENCE]}
        found = False
        for m, rs in recs.items():
            if m == REFERENCE:
                continue
            diffs = [_diff_pct(full_len.get(str(r["id"])), r.get("output_tokens")) for r in rs]
            diffs = [x for x in diffs if x is not None]
            pooled.setdefault(m, []).extend(diffs)
            found = found or bool(diffs)
        if found:
            tasks.append(f"{d['task']}-L{int(d['length'])}")
    pooled = {m: v for m, v in pooled.items() if v}
    if pooled:
        names = sorted(dict.fromkeys(tasks), key=task_order)
        shown = ", ".join(names[:3]) + (f" + {len(names) - 3} more" if len(names) > 3 else "")
        sources[f"kvcheck eval records ({shown})"] = pooled
    medians = {}
    for _, d in inputs.of("kvcheck-report"):
        for r in d["rows"]:
            if r["suite"] == "drift" and r["metric"] == "median_diff_pct" and is_num(r.get("now")) \
                    and r["method"] != REFERENCE:
                medians[r["method"]] = r["now"]
    every = set(medians) | {m for per in sources.values() for m in per}
    return {"sources": sources, "medians": medians, "notes": notes, "refs": inputs.refs_of(every)}


def throughput_data(inputs: Inputs) -> dict:
    """``{"points": [(batch, length), ...], "methods": {method: {(batch, length): {name: value}}}}``
    with names prefill_ratio, decode_ratio, kv_ratio, decode_bound (a speed-up bound, as bench
    reports it). ``full`` is left out: every ratio of full to itself is 1."""
    methods: dict[str, dict] = {}

    def put(m, b, n, name, value):
        if m != REFERENCE and is_num(value):
            methods.setdefault(m, {}).setdefault((int(b), int(n)), {})[name] = value

    for _, d in inputs.of("kvcheck-report"):
        for r in d["rows"]:
            hit = _TP_METRIC.match(r["metric"])
            if r["suite"] == "throughput" and hit:
                put(r["method"], hit["batch"], hit["length"], hit["name"], r.get("now"))
    for _, d in inputs.of("kvcheck-bench"):
        for p in d["points"]:
            for name in ("prefill_ratio", "decode_ratio", "kv_ratio", "decode_bound", "compress_share"):
                put(p["method"], p["batch"], p["length"], name, p.get(name))
    points = sorted({pt for per in methods.values() for pt in per})
    ordered = sorted(methods, key=lambda m: method_order(inputs.ref(m)))
    return {"points": points, "methods": {m: methods[m] for m in ordered}, "refs": inputs.refs_of(methods)}


def task_of(sample_id: str) -> str:
    s = str(sample_id)
    return s.rsplit("-", 1)[0] if "-" in s else ""


def _sample_order(sample_id) -> tuple:
    return (task_order(task_of(sample_id)), task_order(str(sample_id)))


# flip-matrix cell codes
BOTH_RIGHT, BOTH_WRONG, LOST, GAINED, NO_DATA = 0, 1, 2, 3, 4
ONLY_RIGHT, ONLY_WRONG = 5, 6  # when there is no full reference: the method alone


def flip_data(inputs: Inputs) -> dict:
    """``{"samples": [...], "methods": [...], "cells": [[code per sample] per method], "reference": bool,
    "counts": {method: (lost, gained)}}``; samples ordered by task, then number."""
    correct: dict[str, dict[str, bool]] = {}
    for m, samples in inputs.accuracy_samples.items():
        correct.setdefault(m, {}).update({str(i): bool(s.get("correct")) for i, s in samples.items()
                                          if "correct" in s})
    for _, d in inputs.of("kvcheck-eval"):
        for m, recs in d.get("records", {}).items():
            for r in recs:
                if isinstance(r.get("correct"), bool):
                    correct.setdefault(m, {})[str(r["id"])] = r["correct"]
                elif is_num(r.get("score")):
                    correct.setdefault(m, {})[str(r["id"])] = r["score"] >= CORRECT_AT
    correct = {m: v for m, v in correct.items() if v}
    ref = correct.get(REFERENCE)
    methods = [m for m in sorted(correct, key=lambda m: method_order(inputs.ref(m))) if m != REFERENCE]
    samples = sorted({i for m in ([REFERENCE] if ref else []) + methods for i in correct[m]}, key=_sample_order)
    cells, counts = [], {}
    for m in methods:
        row, lost, gained = [], 0, 0
        for i in samples:
            now = correct[m].get(i)
            if ref is None:
                row.append(NO_DATA if now is None else (ONLY_RIGHT if now else ONLY_WRONG))
                continue
            was = ref.get(i)
            if now is None or was is None:
                row.append(NO_DATA)
            elif was and now:
                row.append(BOTH_RIGHT)
            elif not was and not now:
                row.append(BOTH_WRONG)
            elif was:
                row.append(LOST)
                lost += 1
            else:
                row.append(GAINED)
                gained += 1
        cells.append(row)
        counts[m] = (lost, gained)
    return {"samples": samples, "methods": methods, "cells": cells, "reference": ref is not None, "counts": counts,
            "refs": inputs.refs_of(methods)}


STATUS_ORDER = {"regressed": 0, "changed": 1, "missing": 2, "new": 3, "improved": 4, "cannot-fail": 5,
                "below-random": 6, "ok": 7}


def summary_rows(inputs: Inputs) -> list[dict]:
    """Every report row, regressions first."""
    rows = [r for _, d in inputs.of("kvcheck-report") for r in d["rows"]]
    return sorted(rows, key=lambda r: (STATUS_ORDER.get(r["status"], 9), r["suite"],
                                       method_order(inputs.ref(r["method"])), task_order(r["metric"])))


def predicted_data(inputs: Inputs) -> list[dict]:
    """The predicted GPU time ratios of ``kvcheck bench --json`` files (their ``work`` rows, from the
    counted work): one row per method and point, ``{gpu: (prefill ratio, decode ratio)}``."""
    rows = []
    for _, doc in inputs.of("kvcheck-bench"):
        for r in doc.get("work") or []:
            rows.append({"method": r["method"], "batch": r["batch"], "length": r["length"],
                         "predicted": {g: (v.get("prefill"), v.get("decode")) for g, v in r["predicted"].items()}})
    return rows

