"""Predicted speed-ups on named GPUs from counted work (pure functions).

Each counted op is charged max(its FLOPs / peak dense bf16 FLOP/s, its bytes / memory bandwidth) plus
a launch cost; a phase's predicted time is the sum over its ops, and the prediction for a method is
its predicted time over ``full``'s, per prefill and per decode step. Bytes counted on an fp32 run are
halved for a bf16 GPU (the counter's ``bytes_scale``).

What this cannot see: fused kernels (a fused dequantise-attention kernel never writes the dequantised
cache: the counts charge that traffic), overlap of compute and memory, and time spent waiting.
"""
from __future__ import annotations

from ..gpus import GPU, GPUS, LAUNCH_S, roofline_s  # noqa: F401  (the table lives low, for the counter)


def phase_time(work, phase: str, gpu: GPU) -> float:
    """Predicted seconds of one phase: each compute op's roofline (counted per op), the other ops'
    bytes at full bandwidth, and one launch per op."""
    t = 0.0
    for c in work.counts.get(phase, {}).values():
        t += c.get(f"roof:{gpu.name}", 0.0) + c.get("mem_bytes", 0) * work.bytes_scale / gpu.bandwidth \
            + c.get("ops", 0) * LAUNCH_S
    return t


def predicted_ratios(method_work, full_work, gpus=GPUS) -> dict:
    """``{gpu: {"prefill": method/full, "decode": method/full per step}}``: > 1 means slower."""
    out = {}
    for gpu in gpus:
        row = {"prefill": phase_time(method_work, "prefill", gpu) / phase_time(full_work, "prefill", gpu)}
        msteps = [p for p in method_work.phases() if p.startswith("decode")]
        fsteps = [p for p in full_work.phases() if p.startswith("decode")]
        if msteps and fsteps:
            m = sum(phase_time(method_work, p, gpu) for p in msteps) / len(msteps)
            f = sum(phase_time(full_work, p, gpu) for p in fsteps) / len(fsteps)
            row["decode"] = m / f
        out[gpu.name] = row
    return out
