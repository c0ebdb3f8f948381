"""Output-length drift (the study's second finding), as pure functions on output lengths.

Per request: diff% = (len_full − len_method) / len_full × 100; negative means the method's answer is
longer. Longer answers eat the latency a smaller cache buys.
"""
from __future__ import annotations

import statistics


def diff_percent(full_len: int, method_len: int) -> float:
    if full_len <= 0:
        raise ValueError("full output length must be positive")
    return (full_len - method_len) / full_len * 100.0


def drift_summary(full_lens: list[int], method_lens: list[int], cap: int, method_hit_cap: list[bool],
                  full_decode_s: float | None = None, method_decode_s: float | None = None) -> dict:
    """Median diff%, share of requests ≥ 20 % longer, share hitting the cap, and the end-to-end
    latency ratio implied by the lengths (× the per-token decode-time ratio when timings are given)."""
    if len(full_lens) != len(method_lens) or not full_lens:
        raise ValueError("need one full and one method length per request")
    diffs = [diff_percent(f, m) for f, m in zip(full_lens, method_lens)]
    token_ratio = sum(method_lens) / sum(full_lens)
    per_token = (method_decode_s / full_decode_s) if (full_decode_s and method_decode_s) else 1.0
    return {
        "median_diff_pct": statistics.median(diffs),
        "share_20pct_longer": sum(d <= -20.0 for d in diffs) / len(diffs),
        "share_hit_cap": sum(bool(h) for h in method_hit_cap) / len(diffs),
        "latency_ratio": token_ratio * per_token,
        "_diffs": diffs,
    }
