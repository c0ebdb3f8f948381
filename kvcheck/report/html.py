"""The self-contained page: the regression table, then each figure embedded as a base64 PNG (nothing
is fetched when it opens), with a caption saying how to read it, or a line saying what input it needs."""
from __future__ import annotations

import base64
import datetime
import html

from ..judge import FAILING
from ..tables import Column, number
from ..tables import render_html as html_table
from ..summary import accept_command
from .load import Inputs, report_paths
from .shape import STATUS_ORDER, predicted_data

PLOTS = ("accuracy", "drift", "throughput", "flips")
PNG_NAMES = {name: f"kvcheck-{name}.png" for name in PLOTS}

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
                   "Prefill and decode time as ratios to full measured in the same run (below 1 is faster), one "
                   "line per method and batch size over prompt lengths. The short bars in the decode panel are the "
                   "bytes-read bound 1 / decode_bound: the best decode ratio if decoding is bound by reading weights "
                   "+ KV. The KV panel is the bytes held relative to full. Only measured quantities get a panel (a "
                   "CPU ci run without perf baselines records KV bytes only); a single grid point is drawn as bars."),
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
td.l{text-align:left;font-family:monospace}tr.regressed td,tr.changed td,tr.missing td{background:#fde2e2}
tr.improved td{background:#e2f0fd}.counts span{margin-right:14px}ul.notes{color:#666;font-size:13px}
nav a{margin-right:14px}
"""


def _status(s: str) -> str:
    return s.upper() if s in FAILING else s


COLUMNS = (
    Column("method", "method"),
    Column("suite", "suite"),
    Column("metric", "metric"),
    Column("baseline", "baseline", align=">", fmt=number()),
    Column("now", "now", align=">", fmt=number()),
    Column("Δ", "delta", align=">", fmt=number()),
    Column("tolerance", "tolerance", align=">", fmt=lambda t: "-" if t is None else f"±{t:.3g}"),
    Column("direction", lambda r: str(r.get("direction", "")), align=">"),
    Column("status", "status", align=">", fmt=_status),
)


def _table(rows: list[dict]) -> str:
    return html_table(COLUMNS, rows, row_class=lambda r: r["status"])


def summary_html(rows: list[dict], paths=()) -> str:
    """The regression table; ``paths`` are the test files the rows came from (named in the accept hint)."""
    if not rows:
        return ("<p class='empty'>No comparison rows: the regression table needs a file written by "
                "pytest --kvcheck-report FILE.</p>")
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    bad = [r for r in rows if r["status"] in FAILING]
    parts = ["<p class='counts'>" + "".join(f"<span><b>{c}</b> {s}</span>" for s, c in counts.items() if c) +
             f"<span>({len(rows)} comparisons)</span></p>"]
    if bad:
        parts.append(_table(bad))
        parts.append(f"<p class='caption'>Accept intended changes with <code>{html.escape(accept_command(paths))}"
                     "</code> (add <code>-k METHOD_ID</code> to narrow), then review <code>git diff baselines/</code>."
                     "</p>")
    else:
        parts.append("<p><b>No regressions.</b></p>")
    parts.append(f"<details><summary>All {len(rows)} comparisons</summary>{_table(rows)}</details>")
    return "".join(parts)


def predicted_html(rows: list[dict]) -> str:
    """Predicted prefill/decode time ratios to full on named GPUs, from counted work (bench JSON)."""
    if not rows:
        return ""
    gpus = list(rows[0]["predicted"])
    cols = [Column("method", "method"), Column("batch", "batch", align=">"), Column("length", "length", align=">")]
    for g in gpus:
        cols.append(Column(g, lambda r, g=g: r["predicted"].get(g), align=">",
                           fmt=lambda v: "-" if not v else "/".join("-" if x is None else f"{x:.2f}" for x in v)))
    caption = ("Predicted time ratio to full, prefill/decode (> 1: slower), from each point's counted work: every op "
               "charged max(FLOPs / peak dense bf16, bytes / bandwidth) plus a launch; fused kernels and waiting "
               "are not seen. Beside the measured ratios and the decode bound above.")
    return (f"<section id='predicted'><h2>Predicted on GPUs</h2><p class='caption'>{html.escape(caption)}</p>"
            f"{html_table(tuple(cols), rows)}</section>")


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
            f"<section id='regressions'><h2>Regressions</h2>{summary_html(rows, report_paths(inputs))}</section>"
            f"{''.join(sections)}{predicted_html(predicted_data(inputs))}{note_html}</body></html>\n")

