"""The gated figures of a counted run (pure functions on :class:`kvcheck.work.Work` counts).

Per phase: the method region's ops, FLOPs, bytes and Python lines (its own work: gate the region,
not the whole forward, whose totals hide a scorer three times slower), the bytes on the KV path
(cache, attention and method regions: what a decode step reads and writes because of the cache) and
host syncs. Decode figures are per step (the mean over the counted steps); ``decode.kv_path_growth``
is the last step's KV-path bytes over the first's.
"""
from __future__ import annotations

KV_PATH = ("cache", "attention", "method")
METHOD_KINDS = ("ops", "flops", "bytes", "py_lines")


def _phase(work, phase: str) -> dict:
    out = {f"method_{k}": work.get(phase, "method", k) for k in METHOD_KINDS}
    out["kv_path_bytes"] = work.total(phase, "bytes", KV_PATH)
    out["syncs"] = work.total(phase, "syncs")
    return out


def work_metrics(work) -> dict:
    """``work.prefill.*`` and ``work.decode.*`` (per step) figures of one counted run."""
    steps = [p for p in work.phases() if p.startswith("decode")]
    out = {f"work.prefill.{k}": float(v) for k, v in _phase(work, "prefill").items()}
    if steps:
        per = [_phase(work, p) for p in steps]
        for k in per[0]:
            out[f"work.decode.{k}"] = sum(p[k] for p in per) / len(per)
        first, last = per[0]["kv_path_bytes"], per[-1]["kv_path_bytes"]
        out["work.decode.kv_path_growth"] = last / first if first else 1.0
    return out
