"""Counted work (kvcheck.work): the formulas, determinism, what each kind of regression moves, the
gated figures (kvcheck.metrics.work) and the GPU predictions (kvcheck.metrics.roofline)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from kvcheck import bench, work
from kvcheck.methods import KIVI, Full, KNorm, SnapKV, StreamingLLM
from kvcheck.metrics import roofline
from kvcheck.metrics.work import work_metrics


# ---- formulas ------------------------------------------------------------------------------------

def test_attention_pairs_causal_masked_and_gqa():
    assert work.attention_pairs(1, 1, 4, 4, causal=True, mask=None) == 4 + 3 + 2 + 1
    assert work.attention_pairs(2, 3, 2, 6, causal=True, mask=None) == 2 * 3 * (5 + 6)  # bottom-right aligned
    assert work.attention_pairs(2, 3, 1, 6, causal=False, mask=None) == 2 * 3 * 6
    mask = torch.tensor([[True, False, True]]).view(1, 1, 1, 3)
    assert work.attention_pairs(2, 4, 1, 3, causal=False, mask=mask) == 2 * 4 * 2  # broadcast over batch and heads
    fmask = torch.tensor([[0.0, float("-inf"), 0.0]]).view(1, 1, 1, 3)
    assert work.attention_pairs(1, 1, 1, 3, causal=False, mask=fmask) == 2


def test_sdpa_flops_charge_only_attended_pairs():
    q, k, v = torch.zeros(1, 4, 8, 16), torch.zeros(1, 2, 8, 16), torch.zeros(1, 2, 8, 16)  # GQA 2:1
    causal = work.sdpa_flops((q, k, v, 0.0, True), {})
    dense = work.sdpa_flops((q, k, v, 0.0, False), {})
    assert dense == 4 * 4 * 8 * 8 * 16 and causal == 4 * 4 * 36 * 16


def test_matmul_flops_are_counted_once_per_op():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    with work.WorkCounter() as wc:
        a @ b
        torch.nn.functional.linear(a, b.T)
    assert wc.work.total("prefill", "flops") == 2 * (2 * 3 * 5 * 7)


def test_views_are_free_and_scalar_reads_are_syncs():
    x = torch.randn(4, 4)
    with work.WorkCounter() as wc:
        x.view(16)
        bool(x.sum() > 0)
    w = wc.work
    assert w.total("prefill", "ops") == 3  # sum, gt, the scalar read: the view costs nothing
    assert w.total("prefill", "syncs") == 1
    with torch.inference_mode():  # where the engine runs, bool() and item() dispatch other ops
        y = torch.randn(4)
        with work.WorkCounter() as wc:
            bool(y.sum() > 0)
            y.sum().item()
    assert wc.work.total("prefill", "syncs") == 2


def test_regions_attribute_work_and_python_lines():
    x = torch.randn(8, 8)
    with work.WorkCounter() as wc:
        with work.region("method"):
            for _ in range(5):
                x = x + 1
        x * 2
    w = wc.work
    assert w.get("prefill", "method", "ops") == 5 and w.get("prefill", "model", "ops") == 1
    assert w.get("prefill", "method", "py_lines") >= 10 and w.get("prefill", "model", "py_lines") == 0


# ---- on a model ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TripleScore(KNorm):
    """knorm scoring every prompt three times (the same scores)."""

    def score(self, inputs):
        super().score(inputs)
        super().score(inputs)
        return super().score(inputs)


@dataclass(frozen=True)
class LoopScore(KNorm):
    """knorm walking every token in a Python loop (the same scores)."""

    def score(self, inputs):
        s = super().score(inputs)
        for _ in range(s.shape[-1]):
            pass
        return s


@pytest.fixture(scope="module")
def ids(tiny_lm):
    return bench.prompt_ids(tiny_lm, 2, 96)


def figures(lm, ids, method, steps=4):
    return work_metrics(bench.count_run(lm, ids, method, steps).work)


def test_counts_are_the_same_across_runs_and_threads(tiny_lm, ids):
    m = SnapKV(compression_ratio=0.5, window=8, kernel=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = bench.count_run(tiny_lm, ids, m, 4).work.counts
        torch.set_num_threads(2)
        b = bench.count_run(tiny_lm, ids, m, 4).work.counts
    finally:
        torch.set_num_threads(threads)
    assert a == b


def test_full_does_no_method_work(tiny_lm, ids):
    f = figures(tiny_lm, ids, Full())
    assert f["work.prefill.method_ops"] == 0 and f["work.decode.method_ops"] == 0
    assert f["work.prefill.kv_path_bytes"] > 0 and f["work.decode.kv_path_growth"] > 1.0


def test_a_scorer_three_times_slower_moves_the_method_region_not_the_total(tiny_lm, ids):
    base = bench.count_run(tiny_lm, ids, KNorm(compression_ratio=0.5), 2).work
    slow = bench.count_run(tiny_lm, ids, TripleScore(compression_ratio=0.5), 2).work
    b, s = work_metrics(base), work_metrics(slow)
    assert s["work.prefill.method_bytes"] > 1.2 * b["work.prefill.method_bytes"]  # the gate: 2 %
    assert s["work.prefill.method_ops"] > 1.1 * b["work.prefill.method_ops"]
    assert slow.total("prefill", "flops") == base.total("prefill", "flops")  # norms are not matmuls


def test_a_python_loop_in_a_scorer_shows_as_python_work(tiny_lm, ids):
    b = figures(tiny_lm, ids, KNorm(compression_ratio=0.5))
    s = figures(tiny_lm, ids, LoopScore(compression_ratio=0.5))
    assert s["work.prefill.method_py_lines"] > 1.5 * b["work.prefill.method_py_lines"]
    assert s["work.prefill.method_ops"] == b["work.prefill.method_ops"]  # invisible to an op counter


def test_quantised_decode_reads_its_whole_cache_every_step(tiny_lm, ids):
    full = bench.count_run(tiny_lm, ids, Full(), 4).work
    kivi = bench.count_run(tiny_lm, ids, KIVI(bits=2, group_size=32, residual=16), 4).work
    f = work_metrics(kivi)
    assert f["work.decode.method_bytes"] > 0 and f["work.decode.method_ops"] > 0
    assert f["work.decode.kv_path_bytes"] > work_metrics(full)["work.decode.kv_path_bytes"]
    pred = roofline.predicted_ratios(kivi, full)
    assert set(pred) == {g.name for g in roofline.GPUS}
    assert all(r["decode"] > 1.0 for r in pred.values())  # a predicted slowdown, whatever the bytes held


def test_eviction_while_generating_holds_its_budget_not_every_token(tiny_lm, ids):
    """StreamingLLM keeps 1 − r of the tokens seen while it generates: its cache grows by half a token
    per step where a prefill-only eviction keeps every generated token."""
    steps = 6
    live = bench.count_run(tiny_lm, ids, StreamingLLM(compression_ratio=0.5, sinks=4), steps)
    once = bench.count_run(tiny_lm, ids, SnapKV(compression_ratio=0.5, window=8, kernel=3), steps)
    assert live.kv_bytes_prefill == once.kv_bytes_prefill
    assert (live.kv_bytes_end - live.kv_bytes_prefill) * 2 == once.kv_bytes_end - once.kv_bytes_prefill


def test_roofline_is_compute_or_memory_bound():
    g = roofline.GPUS[0]
    assert roofline.roofline_s(g.bf16_flops, 0, g) == pytest.approx(1.0)
    assert roofline.roofline_s(0, g.bandwidth, g) == pytest.approx(1.0)
    assert all(g.source for g in roofline.GPUS)


def test_matmul_flops_broadcast_and_vectors():
    assert work.mm_flops((4, 3, 5), (5, 7)) == 2 * 4 * 3 * 5 * 7
    assert work.mm_flops((3, 5), (2, 5, 7)) == 2 * 2 * 3 * 5 * 7  # the batch may come from the right side
    assert work.mm_flops((5,), (5, 7)) == 2 * 5 * 7
