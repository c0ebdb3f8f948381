"""Determinism: generation on the tiny model repeats bit for bit (same model object, and a freshly built
one), and the baseline store gives every (suite, method) its own file, so xdist workers never write
the same file (checked on paths here; tests/test_concurrency.py runs the real suites with ``-n 4``)."""
from __future__ import annotations

import pytest
import torch

from kvcheck import baseline as bl
from kvcheck import engine
from kvcheck.methods import H2O, KIVI, Full, KNorm, SnapKV, StreamingLLM
from kvcheck.tasks.base import Sample
from kvcheck.tiny_model import make_tiny

METHODS = [Full(), SnapKV(0.5, window=4), H2O(0.5, recent=4), KIVI(bits=2, group_size=8, residual=4)]


def samples() -> list[Sample]:
    return [Sample(f"s{i}", text, "", "tiny") for i, text in
            enumerate(["the pass key is 31415, remember it well. " * 2, "short prompt, left padded.", "hi"])]


@pytest.fixture(scope="module")
def lm(tiny_lm):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_lm
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.id)
def test_generation_repeats_bit_for_bit(lm, method):
    a = engine.generate(lm, samples(), method, max_new_tokens=6, batch_size=3)
    b = engine.generate(lm, samples(), method, max_new_tokens=6, batch_size=3)
    assert [r.output_ids for r in a] == [r.output_ids for r in b]
    assert [r.kv_bytes_prefill for r in a] == [r.kv_bytes_prefill for r in b]
    prompts, conts = [[5, 9, 17, 33, 65, 99] * 4, [7, 8, 9]], [[3, 4, 5], [6]]
    fa = engine.teacher_forced(lm, prompts, conts, method, record_attention=True)
    fb = engine.teacher_forced(lm, prompts, conts, method, record_attention=True)
    for x, y in zip(fa, fb):
        assert torch.equal(x.logits, y.logits)
        assert all(torch.equal(p, q) for p, q in zip(x.attention, y.attention))


def test_a_rebuilt_model_generates_the_same(lm):
    fresh = make_tiny()
    for method in (Full(), StreamingLLM(0.5, sinks=2)):
        a = engine.generate_batch(lm, samples(), method, max_new_tokens=6, eos_ids=[])
        b = engine.generate_batch(fresh, samples(), method, max_new_tokens=6, eos_ids=[])
        assert [r.output_ids for r in a] == [r.output_ids for r in b], method.id


def test_baseline_paths_are_distinct_per_method_and_suite(tmp_path):
    methods = [Full(), StreamingLLM(0.5), StreamingLLM(0.75), StreamingLLM(0.5, sinks=2), SnapKV(0.5),
               KNorm(0.5), H2O(0.5), KIVI(bits=2), KIVI(bits=4)]
    suites = ["fidelity", "accuracy", "length_drift", "throughput", "properties"]
    paths = [bl.baseline_path(tmp_path, "m", "ci", "float32", s, m.id) for s in suites for m in methods]
    assert len(set(paths)) == len(paths)
    assert all(tmp_path in p.parents for p in paths)
    # the same key always maps to the same file (a rerun, or another worker, finds it)
    assert bl.baseline_path(tmp_path, "m", "ci", "float32", "fidelity", Full().id) == paths[0]
