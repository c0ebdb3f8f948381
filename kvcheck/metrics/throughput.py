"""Throughput as ratios to the full cache measured in the same run (pure functions on timings)."""
from __future__ import annotations

import statistics


def spread(xs: list[float]) -> float:
    """Relative spread of repeats: (max − min) / median."""
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m else 0.0


def ratio(method_times: list[float], full_times: list[float]) -> float:
    """median(method) / median(full): > 1 means the method is slower."""
    return statistics.median(method_times) / statistics.median(full_times)


def decode_bound(weight_bytes: int, full_kv_bytes: int, method_kv_bytes: int) -> float:
    """Best possible decode speed-up when decode is bound by bytes read per step:
    (weights + full KV) / (weights + KV held)."""
    return (weight_bytes + full_kv_bytes) / (weight_bytes + method_kv_bytes)
