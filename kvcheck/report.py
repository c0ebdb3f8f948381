"""``kvcheck report``: one self-contained HTML page (and its PNGs) from kvcheck's JSON results.

Inputs, any mix of::

    kvcheck-report   pytest suites/ --kvcheck-report FILE     comparison rows of every suite
    kvcheck-eval     kvcheck eval --json FILE                 accuracy rows + per-sample records
    kvcheck-bench    kvcheck bench --json FILE                throughput points (ratios to full)

plus, optionally, a baseline folder (``--baselines``) whose ``accuracy/`` and ``drift/`` files hold
per-sample records. Where two inputs give the same value (same method, task or grid point), the one
read later wins: files in the order given, the baseline folder before all of them.

The page has four plots and a table:

1. accuracy vs compression ratio, one panel per task. Eviction methods sit at the ratio in their id
   (``-r<ratio>``: the fraction of the KV cache removed), one line per configuration; quantisation
   and other methods are separate markers (one per method, no line) at 1 − kv_ratio
   (fp16-equivalent bytes held / full's) measured in the inputs, or at the nominal 1 − bits/16 when
   none was measured; ``full`` is the dashed reference line.
2. output-length drift: a density of per-request diff% = (len_full − len_method) / len_full × 100 per
   method (negative: longer than full), from drift baselines or from ``kvcheck eval`` records.
3. throughput: prefill and decode time as ratios to full over the batch × length grid, the decode
   bound (the best decode ratio if decode is bound by bytes read) where known, and KV bytes / full.
4. per-sample flips: methods × samples, right/wrong of each method against full's right/wrong.

Data shaping is pure (dicts and lists in, dicts and lists out); plotting imports matplotlib lazily
and draws with the Agg canvas only (no pyplot, no global backend change).
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KvcheckError
from .io import write_bytes_atomic

KINDS = {
    "kvcheck-report": "pytest suites/ --kvcheck-report FILE",
    "kvcheck-eval": "kvcheck eval --json FILE",
    "kvcheck-bench": "kvcheck bench --json FILE",
}
PLOTS = ("accuracy", "drift", "throughput", "flips")
PNG_NAMES = {name: f"kvcheck-{name}.png" for name in PLOTS}
CORRECT_AT = 0.5  # an eval record counts as right when its score reaches this (as the accuracy suite does)
REFERENCE = "full"

# --- method ids ------------------------------------------------------------------------------------

_RATIO_PART = re.compile(r"^r(\d+(?:\.\d+)?)$")
_BITS_PART = re.compile(r"^b(\d+)$")
_FP_FAMILY = re.compile(r"^fp(\d+)$")


def family(method_id: str) -> str:
    """The method's name: the id up to its first ``-`` (``snapkv-r0.5-w16`` → ``snapkv``)."""
    return method_id.split("-", 1)[0]


def ratio(method_id: str) -> float | None:
    """The eviction compression ratio in the id (``-r0.5`` → 0.5), or None for other methods."""
    for part in method_id.split("-")[1:]:
        m = _RATIO_PART.match(part)
        if m:
            return float(m.group(1))
    return None


def config_key(method_id: str) -> str:
    """The id without its ratio part: the methods that make one line of the accuracy plot."""
    parts = method_id.split("-")
    return "-".join([parts[0]] + [p for p in parts[1:] if not _RATIO_PART.match(p)])


def nominal_kv_ratio(method_id: str) -> float | None:
    """bits / 16 from a ``-b<bits>`` part or an ``fp<bits>`` name; None when the id names no bits."""
    fam = _FP_FAMILY.match(family(method_id))
    if fam:
        return int(fam.group(1)) / 16
    for part in method_id.split("-")[1:]:
        m = _BITS_PART.match(part)
        if m:
            return int(m.group(1)) / 16
    return None


def method_kind(method_id: str) -> str:
    if method_id == REFERENCE:
        return "full"
    return "eviction" if ratio(method_id) is not None else "other"


def method_order(method_id: str) -> tuple:
    """Full first, then eviction methods by name and ratio, then the rest by name."""
    kind = {"full": 0, "eviction": 1, "other": 2}[method_kind(method_id)]
    return (kind, family(method_id), config_key(method_id), ratio(method_id) or 0.0, method_id)


# One colour per method family, the same in every plot and every report; red and grey are kept for
# regressions and missing data.
FAMILY_COLOURS = {
    "full": "#222222", "snapkv": "#1f77b4", "streaming_llm": "#ff7f0e", "kivi": "#2ca02c", "h2o": "#9467bd",
    "tova": "#8c564b", "pyramidkv": "#17becf", "knorm": "#bcbd22", "random": "#e377c2", "fp8": "#393b79",
    "int": "#637939",
}
_SPARE_COLOURS = ["#5254a3", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
                  "#636363", "#6baed6", "#fd8d3c", "#74c476"]
_LINESTYLES = ["-", "--", ":", "-."]
_MARKERS = ["o", "s", "^", "v", "P", "X", "<", ">"]
_QUANT_MARKERS = ["D", "p", "h", "8", "d", "H", "*", "X"]  # quantisation variants in the accuracy plot


def styles(method_ids) -> dict[str, dict]:
    """``{id: {"colour", "linestyle", "marker"}}``: colour by family; variants of one family differ by
    line style and marker, in :func:`method_order`."""
    ids = sorted(set(method_ids), key=method_order)
    unknown = sorted({family(m) for m in ids} - set(FAMILY_COLOURS))
    colours = dict(FAMILY_COLOURS)
    colours.update({f: _SPARE_COLOURS[k % len(_SPARE_COLOURS)] for k, f in enumerate(unknown)})
    seen: dict[str, int] = {}
    out = {}
    for m in ids:
        k = seen.get(family(m), 0)
        seen[family(m)] = k + 1
        out[m] = {"colour": colours[family(m)], "linestyle": _LINESTYLES[k % len(_LINESTYLES)],
                  "marker": _MARKERS[k % len(_MARKERS)]}
    return out


# --- loading and checking inputs -----------------------------------------------------------------------


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _opt_num(v) -> bool:
    """None or any number (NaN and infinities included: a report row may hold a NaN metric; the plots
    skip non-finite values and the table prints them)."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def read_json(path: Path):
    if path.is_dir():
        raise KvcheckError(f"{path} is a folder; pass the JSON files themselves (e.g. {path}/*.json).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KvcheckError(f"{path} does not exist; check the path.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KvcheckError(f"{path} is not valid JSON ({exc}); regenerate it.") from None


def _bad(path, what: str, kind: str) -> KvcheckError:
    return KvcheckError(f"{path}: {what}; it is not a well-formed {kind} file — regenerate it with {KINDS[kind]}.")


def check_doc(path, doc) -> str:
    """The document's kind, after checking the fields the report reads; KvcheckError otherwise."""
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind not in KINDS:
        accepted = "; ".join(f"{k} (written by {v})" for k, v in KINDS.items())
        found = f"kind {kind!r}" if isinstance(doc, dict) and "kind" in doc else "no 'kind' field"
        raise KvcheckError(f"{path} has {found}; kvcheck report reads {accepted}.")
    if kind == "kvcheck-report":
        rows = doc.get("rows")
        if not isinstance(rows, list):
            raise _bad(path, "'rows' must be a list", kind)
        for k, r in enumerate(rows):
            if not (isinstance(r, dict) and all(isinstance(r.get(f), str) for f in ("method", "suite", "metric",
                                                                                     "status"))
                    and all(_opt_num(r.get(f)) for f in ("baseline", "now", "delta", "tolerance"))):
                raise _bad(path, f"row {k} needs string method/suite/metric/status and numeric or null "
                                 "baseline/now/delta/tolerance", kind)
    elif kind == "kvcheck-eval":
        if not isinstance(doc.get("task"), str) or not _is_num(doc.get("length")):
            raise _bad(path, "it needs a string 'task' and a numeric 'length'", kind)
        rows, records = doc.get("rows", []), doc.get("records", {})
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("method"), str)
                                                 and _opt_num(r.get("accuracy")) and _opt_num(r.get("kv_ratio"))
                                                 for r in rows):
            raise _bad(path, "'rows' must be a list of {method, accuracy, kv_ratio, ...}", kind)
        if not isinstance(records, dict):
            raise _bad(path, "'records' must map method ids to lists of records", kind)
        for m, recs in records.items():
            if not isinstance(recs, list):
                raise _bad(path, f"records of {m!r} must be a list", kind)
            for k, r in enumerate(recs):
                sid = r.get("id") if isinstance(r, dict) else None
                if not (isinstance(sid, (str, int)) and not isinstance(sid, bool)
                        and _opt_num(r.get("score")) and _opt_num(r.get("output_tokens"))):
                    raise _bad(path, f"record {k} of {m!r} needs an 'id' and numeric or null score/output_tokens",
                               kind)
    else:
        points = doc.get("points")
        if not isinstance(points, list):
            raise _bad(path, "'points' must be a list", kind)
        for k, p in enumerate(points):
            if not (isinstance(p, dict) and isinstance(p.get("method"), str) and _is_num(p.get("batch"))
                    and _is_num(p.get("length"))
                    and all(_opt_num(p.get(f)) for f in ("prefill_ratio", "decode_ratio", "kv_ratio", "decode_bound"))):
                raise _bad(path, f"point {k} needs a method, numeric batch and length, and numeric or null "
                                 "prefill_ratio/decode_ratio/kv_ratio/decode_bound", kind)
    return kind


@dataclass
class Inputs:
    """Everything read, in order; ``docs`` are ``(path, kind, document)``."""

    docs: list = field(default_factory=list)
    accuracy_samples: dict = field(default_factory=dict)  # method id → {sample id: baseline record}
    drift_samples: dict = field(default_factory=dict)  # method id → {sample id: baseline record}
    accuracy_metrics: dict = field(default_factory=dict)  # method id → {metric: value} from accuracy baselines
    baselines_dir: str | None = None

    def of(self, kind: str) -> list:
        return [(p, d) for p, k, d in self.docs if k == kind]


def load_inputs(paths) -> Inputs:
    if not paths:
        raise KvcheckError("no input files; pass one or more JSON results: " +
                           "; ".join(f"{k} from {v}" for k, v in KINDS.items()) + ".")
    inputs = Inputs()
    for p in paths:
        doc = read_json(Path(p))
        inputs.docs.append((str(p), check_doc(p, doc), doc))
    return inputs


def _suite_groups(root: Path) -> dict[Path, list[Path]]:
    groups: dict[Path, list[Path]] = {}
    for f in sorted(root.rglob("*.json")):
        if f.parent.name in ("accuracy", "drift"):
            groups.setdefault(f.parent.parent, []).append(f)
    return groups


def load_baselines(inputs: Inputs, folder) -> None:
    """Per-sample records from ``folder``'s ``accuracy/`` and ``drift/`` baseline files. ``folder`` may
    be the baseline root or one ``<model>/<tier>-<dtype>`` folder; when it holds several, the one
    matching the report's model and tier is used."""
    from . import baseline as bl

    root = Path(folder)
    if not root.is_dir():
        raise KvcheckError(f"--baselines {folder} is not a folder; pass the baseline folder (e.g. baselines/).")
    groups = _suite_groups(root)
    if not groups:
        raise KvcheckError(f"no accuracy/ or drift/ baseline files under {folder}; pass the folder that "
                           "holds <model>/<tier>-<dtype>/accuracy/*.json.")
    if len(groups) > 1:
        wanted = {(d.get("model"), d.get("tier")) for _, d in inputs.of("kvcheck-report")}
        match = [g for g in groups if any(g.parent.name == m and g.name.startswith(f"{t}-") for m, t in wanted)]
        if len(match) != 1:
            listed = ", ".join(str(g) for g in groups)
            raise KvcheckError(f"--baselines {folder} holds several model/tier folders ({listed}); pass one of "
                               "them, e.g. --baselines baselines/<model>/<tier>-<dtype>.")
        groups = {match[0]: groups[match[0]]}
    inputs.baselines_dir = str(next(iter(groups)))
    for f in next(iter(groups.values())):
        data = bl.load(f)
        samples = data.get("samples")
        if samples is not None and not (isinstance(samples, dict)
                                        and all(isinstance(s, dict) for s in samples.values())):
            raise bl.BaselineError(f"baseline {f}: 'samples' must map ids to records; restore it from version control.")
        method_id = data["key"].get("method_id") or f.stem
        if f.parent.name == "accuracy":
            inputs.accuracy_samples[method_id] = samples or {}
            inputs.accuracy_metrics[method_id] = {n: m["value"] for n, m in data["metrics"].items()
                                                  if n.endswith(".accuracy") and _is_num(m["value"])}
        else:
            inputs.drift_samples[method_id] = samples or {}


# --- data shaping: one function per plot ---------------------------------------------------------------

_ACC_METRIC = re.compile(r"^(?P<task>.+)\.accuracy$")
_TP_METRIC = re.compile(r"^b(?P<batch>\d+)-L(?P<length>\d+)\.(?P<name>prefill_ratio|decode_ratio|compress_share|"
                        r"kv_ratio)$")


def measured_kv_ratios(inputs: Inputs) -> dict[str, float]:
    """Median kv_ratio per method over eval rows, report throughput rows and bench points."""
    seen: dict[str, list[float]] = {}
    for _, d in inputs.of("kvcheck-eval"):
        for r in d.get("rows", []):
            if _is_num(r.get("kv_ratio")):
                seen.setdefault(r["method"], []).append(r["kv_ratio"])
    for _, d in inputs.of("kvcheck-report"):
        for r in d["rows"]:
            m = _TP_METRIC.match(r["metric"])
            if r["suite"] == "throughput" and m and m["name"] == "kv_ratio" and _is_num(r.get("now")):
                seen.setdefault(r["method"], []).append(r["now"])
    for _, d in inputs.of("kvcheck-bench"):
        for p in d["points"]:
            if _is_num(p.get("kv_ratio")):
                seen.setdefault(p["method"], []).append(p["kv_ratio"])
    return {m: statistics.median(v) for m, v in seen.items()}


def task_order(task: str) -> tuple:
    """Natural order: ``passkey-L512`` before ``passkey-L1024`` (runs of digits compare as numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(task)))


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
            if r["suite"] == "accuracy" and hit and _is_num(r.get("now")):
                tasks.setdefault(hit["task"], {})[r["method"]] = {
                    "accuracy": r["now"], "baseline": r.get("baseline"), "regressed": r["status"] == "regressed"}
    for _, d in inputs.of("kvcheck-eval"):
        task = f"{d['task']}-L{int(d['length'])}"
        for r in d.get("rows", []):
            if _is_num(r.get("accuracy")):
                tasks.setdefault(task, {})[r["method"]] = {"accuracy": r["accuracy"], "baseline": None,
                                                          "regressed": False}
    kv = measured_kv_ratios(inputs)
    xs, notes = {}, []
    for m in sorted({m for t in tasks.values() for m in t}, key=method_order):
        kind = method_kind(m)
        if kind == "full":
            xs[m] = (0.0, "reference")
        elif kind == "eviction":
            xs[m] = (ratio(m), "id")
        elif m in kv:
            xs[m] = (1.0 - kv[m], "measured kv_ratio")
        elif nominal_kv_ratio(m) is not None:
            xs[m] = (1.0 - nominal_kv_ratio(m), "nominal bits/16")
            notes.append(f"{m}: no measured kv_ratio in the inputs; placed at its nominal 1 − bits/16 = "
                         f"{xs[m][0]:.3g}")
        else:
            notes.append(f"{m}: no compression ratio in its id and no measured kv_ratio; left out of the accuracy plot")
    return {"tasks": {t: tasks[t] for t in sorted(tasks, key=task_order)}, "x": xs, "notes": notes}


def _diff_pct(full_len, method_len) -> float | None:
    if not _is_num(full_len) or not _is_num(method_len) or full_len <= 0:
        return None
    return (full_len - method_len) / full_len * 100.0


def drift_data(inputs: Inputs) -> dict:
    """``{"sources": {source: {method: [diff%, ...]}}, "medians": {method: median diff%}, "notes"}``.

    Per-request diffs come from drift baselines (their ``score``) and from eval records (output
    lengths against ``full``'s in the same file, pooled over the eval files); ``medians`` are the
    report's ``median_diff_pct``, drawn when no per-request data is given."""
    sources: dict[str, dict] = {}
    notes = []
    drift = {m: [s["score"] for s in samples.values() if _is_num(s.get("score"))]
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
            if r["suite"] == "drift" and r["metric"] == "median_diff_pct" and _is_num(r.get("now")) \
                    and r["method"] != REFERENCE:
                medians[r["method"]] = r["now"]
    return {"sources": sources, "medians": medians, "notes": notes}


def throughput_data(inputs: Inputs) -> dict:
    """``{"points": [(batch, length), ...], "methods": {method: {(batch, length): {name: value}}}}``
    with names prefill_ratio, decode_ratio, kv_ratio, decode_bound (a speed-up bound, as bench
    reports it). ``full`` is left out: every ratio of full to itself is 1."""
    methods: dict[str, dict] = {}

    def put(m, b, n, name, value):
        if m != REFERENCE and _is_num(value):
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
    return {"points": points, "methods": {m: methods[m] for m in sorted(methods, key=method_order)}}


def _task_of(sample_id: str) -> str:
    s = str(sample_id)
    return s.rsplit("-", 1)[0] if "-" in s else ""


def _sample_order(sample_id) -> tuple:
    return (task_order(_task_of(sample_id)), task_order(str(sample_id)))


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
                elif _is_num(r.get("score")):
                    correct.setdefault(m, {})[str(r["id"])] = r["score"] >= CORRECT_AT
    correct = {m: v for m, v in correct.items() if v}
    ref = correct.get(REFERENCE)
    methods = [m for m in sorted(correct, key=method_order) if m != REFERENCE]
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
    return {"samples": samples, "methods": methods, "cells": cells, "reference": ref is not None, "counts": counts}


STATUS_ORDER = {"regressed": 0, "missing": 1, "new": 2, "improved": 3, "ok": 4}


def summary_rows(inputs: Inputs) -> list[dict]:
    """Every report row, regressions first."""
    rows = [r for _, d in inputs.of("kvcheck-report") for r in d["rows"]]
    return sorted(rows, key=lambda r: (STATUS_ORDER.get(r["status"], 9), r["suite"], method_order(r["method"]),
                                       task_order(r["metric"])))


# --- plotting ---------------------------------------------------------------------------------------


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise KvcheckError("kvcheck report draws its plots with matplotlib, which is not installed: "
                           "pip install matplotlib  (or pip install 'kvcheck[report]').") from None
    return matplotlib, Figure, FigureCanvasAgg


def _figure(width: float, height: float):
    _, Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, facecolor="white")
    return buf.getvalue()


def plot_accuracy(data: dict) -> bytes | None:
    tasks = {t: v for t, v in data["tasks"].items() if any(m in data["x"] for m in v)}
    if not tasks:
        return None
    from matplotlib.lines import Line2D

    st = styles(data["x"])
    n = len(tasks)
    cols = 2 if n == 4 else min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(max(10.0, 4.6 * cols + 2.8), 3.6 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    handles: dict[str, object] = {}
    ordered = sorted(data["x"], key=method_order)
    for ax, (task, per) in zip(axes.flat, tasks.items()):
        per = {m: per[m] for m in ordered if m in per}
        ax.set_title(task, fontsize=11)
        full = per.get(REFERENCE)
        if full:
            ax.axhline(full["accuracy"], color=FAMILY_COLOURS["full"], linestyle="--", linewidth=1.2, zorder=1)
            ax.plot([0.0], [full["accuracy"]], marker="*", markersize=12, color=FAMILY_COLOURS["full"], zorder=4)
            handles.setdefault("full (no compression)", Line2D([], [], color=FAMILY_COLOURS["full"], linestyle="--",
                                                                marker="*", markersize=10))
        lines: dict[str, list] = {}
        for m, v in per.items():
            if m in data["x"] and method_kind(m) == "eviction":
                lines.setdefault(config_key(m), []).append((data["x"][m][0], v["accuracy"], m))
        line_ids = sorted(lines, key=lambda k: method_order(lines[k][0][2]))
        line_st = styles([k + "-r0" for k in line_ids])
        for key in line_ids:
            pts = sorted(lines[key])
            s = line_st[key + "-r0"]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=s["colour"], linestyle=s["linestyle"],
                    marker=s["marker"], markersize=7, linewidth=2, zorder=3)
            handles.setdefault(f"{key} (eviction)", Line2D([], [], color=s["colour"], linestyle=s["linestyle"],
                                                           marker=s["marker"], linewidth=2))
        for m, v in per.items():
            if m in data["x"] and method_kind(m) == "other":
                x, source = data["x"][m]
                s = st[m]
                hollow = source != "measured kv_ratio"
                marker = _QUANT_MARKERS[_MARKERS.index(s["marker"]) % len(_QUANT_MARKERS)]
                look = dict(color=s["colour"], marker=marker, linestyle="none", markeredgewidth=2,
                            markerfacecolor="white" if hollow else s["colour"])
                ax.plot([x], [v["accuracy"]], markersize=10, zorder=4, **look)
                label = f"{m} (at 1 − {'bits/16, nominal' if hollow else 'kv_ratio'})"
                handles.setdefault(label, Line2D([], [], markersize=8, **look))
        for m, v in per.items():
            if v["regressed"] and m in data["x"]:
                x = data["x"][m][0]
                ax.plot([x], [v["accuracy"]], marker="o", markersize=16, markerfacecolor="none",
                        markeredgecolor="#d62728", markeredgewidth=2, linestyle="none", zorder=5)
                if _is_num(v["baseline"]):
                    ax.plot([x, x], [v["baseline"], v["accuracy"]], color="#d62728", linewidth=1, linestyle=":",
                            zorder=2)
                    ax.plot([x], [v["baseline"]], marker="_", markersize=14, color="#d62728", markeredgewidth=2,
                            zorder=5)
                handles.setdefault("regressed (— baseline value)", Line2D(
                    [], [], marker="o", markersize=12, markerfacecolor="none", markeredgecolor="#d62728",
                    markeredgewidth=2, linestyle="none"))
        ax.set_xlim(-0.04, 1.0)
        ax.set_ylim(-0.04, 1.08)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("compression ratio (fraction of KV cache removed)")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, frameon=False,
               title="eviction: line per configuration\nquantisation: one marker per method", title_fontsize=8)
    fig.suptitle("Accuracy vs compression ratio", fontsize=13, fontweight="bold")
    return _png(fig)


def kde(values, grid):
    """Gaussian kernel density of ``values`` on ``grid`` (Silverman's bandwidth, with a floor so
    ties and single values still draw a bump)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    g = np.asarray(grid, dtype=float)
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    iqr = float(np.subtract(*np.percentile(x, [75, 25])))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    span = float(g.max() - g.min()) if len(g) > 1 else 1.0
    bw = max(0.9 * spread * len(x) ** -0.2, 0.015 * span, 1e-9)
    z = (g[:, None] - x[None, :]) / bw
    return np.exp(-0.5 * z * z).sum(axis=1) / (len(x) * bw * math.sqrt(2 * math.pi))


def plot_drift(data: dict) -> bytes | None:
    import numpy as np

    sources = data["sources"]
    if not sources and not data["medians"]:
        return None
    panels = list(sources.items()) or [("report median diff% (no per-request data)", None)]
    every = [m for _, per in panels if per for m in per] or list(data["medians"])
    st = styles(every)
    n_rows = max(len(per) if per else len(data["medians"]) for _, per in panels)
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(max(9.5, 7.4 * cols), (0.62 * max(n_rows, 3) + 1.9) * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, per) in zip(axes.flat, panels):
        if per is None:  # medians only: one dot per method
            ms = sorted(data["medians"], key=method_order, reverse=True)
            vals = [data["medians"][m] for m in ms]
            lo, hi = min(vals + [0.0]), max(vals + [0.0])
            pad = max(5.0, 0.1 * (hi - lo))
            ax.set_xlim(lo - pad, hi + pad)
            for k, m in enumerate(ms):
                ax.plot([0, data["medians"][m]], [k, k], color=st[m]["colour"], linewidth=2)
                ax.plot([data["medians"][m]], [k], marker="o", markersize=8, color=st[m]["colour"])
            ax.set_yticks(range(len(ms)), ms, fontsize=8)
            ax.set_ylim(-0.7, len(ms) - 0.3)
        else:
            ms = sorted(per, key=method_order, reverse=True)
            allv = [v for m in ms for v in per[m]]
            lo, hi = min(allv + [0.0]), max(allv + [0.0])
            pad = max(5.0, 0.12 * (hi - lo))
            grid = np.linspace(lo - pad, hi + pad, 400)
            for k, m in enumerate(ms):
                d = kde(per[m], grid)
                d = d / d.max() * 0.85
                c = st[m]["colour"]
                ax.fill_between(grid, k, k + d, color=c, alpha=0.35, linewidth=0, zorder=2 + 0.01 * k)
                ax.plot(grid, k + d, color=c, linewidth=1.6, zorder=3)
                ax.plot(per[m], [k + 0.04] * len(per[m]), linestyle="none", marker="|", markersize=9, color=c,
                        alpha=0.8, zorder=3)
                med = statistics.median(per[m])
                ax.plot([med, med], [k, k + 0.85], color=c, linewidth=2.2, linestyle=(0, (2, 1)), zorder=4)
                share = sum(v <= -20.0 for v in per[m]) / len(per[m])
                ax.text(1.01, k + 0.3, f"median {med:+.0f}%\n≥20% longer: {share:.0%}\nn={len(per[m])}",
                        transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=7, color="#333333")
            ax.set_xlim(grid[0], grid[-1])
            ax.set_yticks(range(len(ms)), ms, fontsize=8)
            ax.set_ylim(-0.25, len(ms) + 0.05)
        ax.axvline(0, color="black", linewidth=1.2, zorder=5)
        ax.set_title(title, fontsize=10, pad=16)
        ax.set_xlabel("diff% = (len_full − len_method) / len_full × 100")
        ax.grid(True, axis="x", alpha=0.3)
        ax.annotate("← longer than full", xy=(0, 1.0), xycoords=("data", "axes fraction"), xytext=(-4, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=8, color="#b22222")
        ax.annotate("shorter than full →", xy=(0, 1.0), xycoords=("data", "axes fraction"), xytext=(4, 2),
                    textcoords="offset points", ha="left", va="bottom", fontsize=8, color="#1f5f99")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Output-length drift per method\n" + ("(density scaled to its peak; dashed: median; ticks: requests)"
                 if sources else "(median diff% from the report; per-request densities need --baselines or eval "
                 "records)"), fontsize=12, fontweight="bold")
    return _png(fig)


def _grid_label(pt) -> str:
    return f"b{pt[0]}\nL{pt[1]}"


def plot_throughput(data: dict) -> bytes | None:
    if not data["methods"]:
        return None
    from matplotlib.lines import Line2D

    points = data["points"]
    xpos = {pt: k for k, pt in enumerate(points)}
    st = styles(data["methods"])
    panels = [("prefill_ratio", "Prefill time / full's"), ("decode_ratio", "Decode step time / full's")]
    if any("kv_ratio" in v for per in data["methods"].values() for v in per.values()):
        panels.append(("kv_ratio", "KV bytes held / full's"))
    fig = _figure(4.3 * len(panels) + 3.2, 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    any_bound = False
    for ax, (name, title) in zip(axes, panels):
        ax.axhline(1.0, color=FAMILY_COLOURS["full"], linestyle="--", linewidth=1.2)
        top = 1.0
        for m, per in data["methods"].items():
            pts = [pt for pt in points if name in per.get(pt, {})]
            if not pts:
                continue
            s = st[m]
            top = max(top, *(per[pt][name] for pt in pts))
            for b in sorted({pt[0] for pt in pts}):  # one line per batch size, over lengths
                seg = [pt for pt in pts if pt[0] == b]
                ax.plot([xpos[pt] for pt in seg], [per[pt][name] for pt in seg], color=s["colour"],
                        linestyle=s["linestyle"], marker=s["marker"], markersize=7, linewidth=2, alpha=0.9)
            if name == "decode_ratio":
                bounds = [(xpos[pt], 1.0 / per[pt]["decode_bound"]) for pt in points
                          if _is_num(per.get(pt, {}).get("decode_bound")) and per[pt]["decode_bound"] > 0]
                if bounds:
                    any_bound = True
                    ax.plot([b[0] for b in bounds], [b[1] for b in bounds], linestyle="none", marker="_",
                            markersize=26, markeredgewidth=2, color=s["colour"], alpha=0.6)
        for k in range(1, len(points)):
            if points[k][0] != points[k - 1][0]:
                ax.axvline(k - 0.5, color="#999999", linewidth=0.8)
        ax.set_xticks(range(len(points)), [_grid_label(pt) for pt in points])
        ax.set_xlim(-0.5, len(points) - 0.5)
        ax.set_ylim(0, top * 1.12)
        ax.set_title(title + (" (lower is faster)" if name != "kv_ratio" else ""), fontsize=10)
        ax.set_xlabel("batch (b) × prompt length (L)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("ratio to full (1 = same as full)")
    handles = [Line2D([], [], color=FAMILY_COLOURS["full"], linestyle="--", label="full (= 1)")]
    handles += [Line2D([], [], color=s["colour"], linestyle=s["linestyle"], marker=s["marker"], linewidth=2, label=m)
                for m, s in st.items()]
    if any_bound:
        handles.append(Line2D([], [], color="#555555", linestyle="none", marker="_", markersize=16, markeredgewidth=2.5,
                              label="decode bound: 1 / decode_bound\n(best ratio if bound by bytes read)"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle("Throughput relative to full, over batch × length", fontsize=13, fontweight="bold")
    return _png(fig)


_CELL_COLOURS = {BOTH_RIGHT: "#cfe8cf", BOTH_WRONG: "#9e9e9e", LOST: "#d62728", GAINED: "#1f77b4",
                 NO_DATA: "#f4f4f4", ONLY_RIGHT: "#cfe8cf", ONLY_WRONG: "#9e9e9e"}
_CELL_LABELS = {BOTH_RIGHT: "right (full right too)", BOTH_WRONG: "wrong (full wrong too)",
                LOST: "flip right → wrong", GAINED: "flip wrong → right", NO_DATA: "no record",
                ONLY_RIGHT: "right", ONLY_WRONG: "wrong"}


def plot_flips(data: dict) -> bytes | None:
    if not data["methods"] or not data["samples"]:
        return None
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    samples, methods = data["samples"], data["methods"]
    codes = sorted(_CELL_COLOURS)
    cmap = ListedColormap([_CELL_COLOURS[c] for c in codes])
    grid = np.array(data["cells"], dtype=float)
    n, k = len(samples), len(methods)
    width = min(20.0, max(9.0, 0.16 * n + 5.0))
    fig = _figure(width, 0.4 * k + 2.6)
    ax = fig.subplots()
    ax.imshow(grid, cmap=cmap, vmin=min(codes) - 0.5, vmax=max(codes) + 0.5, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8 if n <= 120 else 0)
    ax.tick_params(which="minor", length=0)
    ax.set_yticks(range(k), methods, fontsize=9)
    tasks = [_task_of(s) for s in samples]
    starts = [j for j in range(n) if j == 0 or tasks[j] != tasks[j - 1]]
    for j in starts[1:]:
        ax.axvline(j - 0.5, color="black", linewidth=1.5)
    if n <= 80:
        ax.set_xticks(range(n), [str(s).rsplit("-", 1)[-1] for s in samples], fontsize=6, rotation=90)
    else:
        ax.set_xticks([])
    for a, b in zip(starts, starts[1:] + [n]):
        ax.text((a + b - 1) / 2, -0.7, tasks[a] or "samples", ha="center", va="bottom", fontsize=9,
                fontweight="bold")
    for row, m in enumerate(methods):
        lost, gained = data["counts"][m]
        if data["reference"]:
            ax.text(n - 0.3, row, f"  −{lost} / +{gained}", va="center", ha="left", fontsize=9,
                    color="#d62728" if lost else "#333333")
    ax.set_xlabel("sample (grouped by task; tick: sample number)")
    used = sorted({int(c) for row in data["cells"] for c in row})
    fig.legend(handles=[Patch(facecolor=_CELL_COLOURS[c], edgecolor="#666666", label=_CELL_LABELS[c]) for c in used],
               loc="outside lower center", ncol=len(used), fontsize=9, frameon=False)
    title = ("Per-sample flips vs full (right column: −right→wrong / +wrong→right)" if data["reference"]
             else "Per-sample right/wrong (no full records in the inputs, so no flips)")
    fig.suptitle(title, fontsize=12, fontweight="bold")
    return _png(fig)


# --- HTML ---------------------------------------------------------------------------------------------

CAPTIONS = {
    "accuracy": ("Accuracy vs compression ratio",
                 "One panel per task. Eviction methods sit at the compression ratio in their id (fraction of the KV "
                 "cache removed), one line per configuration. Quantisation and other methods are single markers "
                 "(diamond, pentagon, …; one per method) at 1 − "
                 "kv_ratio (fp16-equivalent bytes held / full's) measured in the inputs; hollow markers sit at the "
                 "nominal 1 − bits/16 because no kv_ratio was measured. The dashed line is full. Red rings mark "
                 "accuracies that regressed against their baseline (the red dash is the baseline value)."),
    "drift": ("Output-length drift",
              "Per request, diff% = (len_full − len_method) / len_full × 100: negative means the method's answer is "
              "longer than full's, which eats the latency a smaller cache buys. One density per method, each scaled "
              "to its peak, with the median dashed and each request as a tick."),
    "throughput": ("Throughput vs batch and length",
                   "Prefill and decode time as ratios to full measured in the same run (below 1 is faster). The "
                   "short bars in the decode panel are the bytes-read bound 1 / decode_bound: the best decode ratio "
                   "if decoding is bound by reading weights + KV. The last panel is the KV bytes held relative to "
                   "full."),
    "flips": ("Per-sample flips",
              "Each cell is one sample under one method, coloured by the method's right/wrong against full's: red "
              "cells lost a sample full got right, blue cells gained one full got wrong."),
}
EMPTY = {
    "accuracy": "No accuracy data: pass a pytest --kvcheck-report file, kvcheck eval --json results, or --baselines.",
    "drift": "No per-request lengths: pass --baselines (drift/ files), kvcheck eval --json results with a full "
             "method, or a --kvcheck-report file with drift rows.",
    "throughput": "No throughput data: pass kvcheck bench --json results or a --kvcheck-report file with "
                  "throughput rows.",
    "flips": "No per-sample correctness: pass --baselines (accuracy/ files) or kvcheck eval --json results.",
}

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;color:#222;
padding:0 16px}
h1{margin-bottom:4px}.meta{color:#555;font-size:14px}section{margin:28px 0}img{max-width:100%;border:1px solid #ddd}
p.caption{color:#444;max-width:1000px}p.empty{color:#777;font-style:italic}table{border-collapse:collapse;
font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td.l{text-align:left;font-family:monospace}tr.regressed td,tr.missing td{background:#fde2e2}
tr.improved td{background:#e2f0fd}.counts span{margin-right:14px}ul.notes{color:#666;font-size:13px}
nav a{margin-right:14px}
"""


def _num_cell(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _table(rows: list[dict]) -> str:
    head = ("<tr><th>method</th><th>suite</th><th>metric</th><th>baseline</th><th>now</th><th>Δ</th>"
            "<th>tolerance</th><th>direction</th><th>status</th></tr>")
    body = []
    for r in rows:
        tol = "-" if r.get("tolerance") is None else f"±{r['tolerance']:.3g}"
        cls = html.escape(r["status"])
        status = r["status"].upper() if r["status"] in ("regressed", "missing") else r["status"]
        body.append(f"<tr class='{cls}'><td class='l'>{html.escape(r['method'])}</td><td class='l'>"
                    f"{html.escape(r['suite'])}</td><td class='l'>{html.escape(r['metric'])}</td>"
                    f"<td>{_num_cell(r.get('baseline'))}</td><td>{_num_cell(r.get('now'))}</td>"
                    f"<td>{_num_cell(r.get('delta'))}</td><td>{tol}</td><td>{html.escape(str(r.get('direction', '')))}"
                    f"</td><td>{html.escape(status)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def summary_html(rows: list[dict]) -> str:
    if not rows:
        return ("<p class='empty'>No comparison rows: the regression table needs a file written by "
                "pytest suites/ --kvcheck-report FILE.</p>")
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    bad = [r for r in rows if r["status"] in ("regressed", "missing")]
    parts = ["<p class='counts'>" + "".join(f"<span><b>{c}</b> {s}</span>" for s, c in counts.items() if c) +
             f"<span>({len(rows)} comparisons)</span></p>"]
    if bad:
        parts.append(_table(bad))
        parts.append("<p class='caption'>Accept intended changes with <code>pytest suites/ --kvcheck-update=all"
                     "</code> (add <code>-k METHOD_ID</code> to narrow), then review <code>git diff baselines/</code>."
                     "</p>")
    else:
        parts.append("<p><b>No regressions.</b></p>")
    parts.append(f"<details><summary>All {len(rows)} comparisons</summary>{_table(rows)}</details>")
    return "".join(parts)


def render_html(inputs: Inputs, pngs: dict[str, bytes | None], rows: list[dict], notes: list[str]) -> str:
    esc = html.escape
    meta = []
    for p, kind, d in inputs.docs:
        bits = [f"{k}={d[k]}" for k in ("model", "tier", "machine", "task", "length") if d.get(k) not in (None, "")]
        described = (": " + ", ".join(bits)) if bits else ""
        meta.append(f"<li><code>{esc(p)}</code> — {esc(kind + described)}</li>")
    if inputs.baselines_dir:
        meta.append(f"<li><code>{esc(inputs.baselines_dir)}</code> — baselines (per-sample records)</li>")
    sections = []
    for name in PLOTS:
        title, caption = CAPTIONS[name]
        if pngs.get(name):
            data = base64.b64encode(pngs[name]).decode("ascii")
            body = (f"<p class='caption'>{esc(caption)}</p><img alt='{esc(title)}' "
                    f"src='data:image/png;base64,{data}'><p class='meta'>Also written as "
                    f"<code>{PNG_NAMES[name]}</code>.</p>")
        else:
            body = f"<p class='empty'>{esc(EMPTY[name])}</p>"
        sections.append(f"<section id='{name}'><h2>{esc(title)}</h2>{body}</section>")
    note_html = ("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>") if notes else ""
    nav = "<a href='#regressions'>Regressions</a>" + "".join(f"<a href='#{n}'>{esc(CAPTIONS[n][0])}</a>" for n in PLOTS)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>kvcheck report</title>"
            f"<style>{_CSS}</style></head><body><h1>kvcheck report</h1><p class='meta'>written {when}</p>"
            f"<ul class='meta'>{''.join(meta)}</ul><nav>{nav}</nav>"
            f"<section id='regressions'><h2>Regressions</h2>{summary_html(rows)}</section>"
            f"{''.join(sections)}{note_html}</body></html>\n")


# --- the whole report ------------------------------------------------------------------------------------


@dataclass
class Result:
    index: Path
    pngs: dict  # plot name → path written
    regressions: int
    notes: list


def build_report(paths, out, baselines=None, quiet: bool = False) -> Result:
    """Read the inputs, draw the plots, write ``out/index.html`` and ``out/kvcheck-<plot>.png``.
    A plot without data gets a note in the page and no PNG (a stale one from an earlier run is removed)."""
    from .progress import bar

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KvcheckError(f"--out {out} is a file; pass a folder for index.html and the PNGs.")
    inputs = load_inputs(paths)
    if baselines is not None:
        load_baselines(inputs, baselines)
    _matplotlib()  # fail before any work when it is missing
    shaped = {"accuracy": accuracy_data(inputs), "drift": drift_data(inputs),
              "throughput": throughput_data(inputs), "flips": flip_data(inputs)}
    drawers = {"accuracy": plot_accuracy, "drift": plot_drift, "throughput": plot_throughput, "flips": plot_flips}
    notes = shaped["accuracy"]["notes"] + shaped["drift"]["notes"]
    if shaped["flips"]["methods"] and not shaped["flips"]["reference"]:
        notes.append(f"no {REFERENCE} records among the per-sample inputs: the flip map shows right/wrong only")
    pngs: dict[str, bytes | None] = {}
    with bar(len(PLOTS) + 1, "kvcheck report", quiet) as pb:
        pb.unit = "plot"
        for name in PLOTS:
            pb.set_postfix_str(name)
            pngs[name] = drawers[name](shaped[name])
            pb.update(1)
        out.mkdir(parents=True, exist_ok=True)
        written = {}
        for name, data in pngs.items():
            path = out / PNG_NAMES[name]
            if data:
                write_bytes_atomic(path, data)
                written[name] = path
            elif path.exists():
                path.unlink()
        rows = summary_rows(inputs)
        index = out / "index.html"
        write_bytes_atomic(index, render_html(inputs, pngs, rows, notes).encode("utf-8"))
        pb.update(1)
    return Result(index, written, sum(r["status"] in ("regressed", "missing") for r in rows), notes)
