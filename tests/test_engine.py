"""The engine and cache against plain transformers, batching, replay, and true positions."""
from __future__ import annotations

import torch
from transformers import DynamicCache

from kvcheck.cache import CompressedCache
from kvcheck.engine import capture_prefill, forward, generate, generate_batch, teacher_forced
from kvcheck.methods import KIVI, Full, SnapKV, StreamingLLM
from kvcheck.tasks import get_task
from kvcheck.tasks.base import Sample

PROMPTS = ["The quick brown fox jumps over the lazy dog. Then it",
           "Once upon a time in a land far away, there lived a",
           "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
           "The capital of France is Paris. The capital of Italy is"]


def _samples():
    return [Sample(id=f"s{i}", prompt=p, answer="", task="t") for i, p in enumerate(PROMPTS)]


@torch.inference_mode()
def test_full_logits_identical_to_dynamic_cache(real_lm):
    """Prefill + 8 greedy decode steps: every step's logits equal plain transformers with DynamicCache."""
    model, tok = real_lm.model, real_lm.tokenizer
    ids = tok(PROMPTS[0], return_tensors="pt")["input_ids"]
    t = ids.shape[1]
    model.set_attn_implementation("sdpa")
    try:
        ref_cache, ref, nxt = DynamicCache(), [], ids
        for step in range(8):
            out = model(input_ids=nxt, cache=ref_cache, use_cache=True, logits_to_keep=1)
            ref.append(out.logits[:, -1])
            nxt = out.logits[:, -1:].argmax(-1)
    finally:
        model.set_attn_implementation("kvcheck")
    cache = CompressedCache(Full(), model.config.num_hidden_layers)
    pos, valid, nxt = torch.arange(t)[None], torch.ones(1, t, dtype=torch.bool), ids
    for step in range(8):
        logits = forward(model, nxt, pos, valid, cache)[:, -1]
        assert torch.equal(logits, ref[step]), f"step {step}: max |diff| {(logits - ref[step]).abs().max()}"
        nxt = logits.argmax(-1, keepdim=True)
        pos, valid = torch.tensor([[t + step]]), torch.ones(1, 1, dtype=torch.bool)


def test_full_generation_matches_transformers_generate(real_lm):
    model, tok = real_lm.model, real_lm.tokenizer
    recs = generate(real_lm, _samples(), Full(), max_new_tokens=12, batch_size=4)
    model.set_attn_implementation("sdpa")
    try:
        for p, r in zip(PROMPTS, recs):
            ids = tok(p, return_tensors="pt")["input_ids"]
            out = model.generate(ids, max_new_tokens=12, do_sample=False, cache=DynamicCache())
            ref = out[0, ids.shape[1]:].tolist()
            assert r.output_ids == ref[:len(r.output_ids)], p
    finally:
        model.set_attn_implementation("kvcheck")


def test_eviction_at_ratio_zero_is_identity(real_lm):
    ref = generate(real_lm, _samples(), Full(), max_new_tokens=10, batch_size=4)
    for method in (SnapKV(0.0, window=4), StreamingLLM(0.0)):
        out = generate(real_lm, _samples(), method, max_new_tokens=10, batch_size=4)
        assert [r.output_ids for r in out] == [r.output_ids for r in ref], method.id


def test_batch_of_four_equals_batch_of_one(real_lm):
    for method in (Full(), SnapKV(0.5, window=4), StreamingLLM(0.5), KIVI(bits=4, group_size=8, residual=4)):
        b4 = generate(real_lm, _samples(), method, max_new_tokens=10, batch_size=4)
        b1 = generate(real_lm, _samples(), method, max_new_tokens=10, batch_size=1)
        assert [r.output_ids for r in b4] == [r.output_ids for r in b1], method.id


def test_replayed_prefill_equals_live_prefill(tiny_lm):
    samples = _samples()
    pre = capture_prefill(tiny_lm, samples, 6)
    for method in (Full(), SnapKV(0.5, window=4), StreamingLLM(0.5, sinks=2), KIVI(bits=2, group_size=8, residual=4)):
        live = generate_batch(tiny_lm, samples, method, 6)
        replayed = generate_batch(tiny_lm, samples, method, 6, shared=pre)
        assert [r.output_ids for r in live] == [r.output_ids for r in replayed], method.id
        assert [r.kv_bytes_prefill for r in live] == [r.kv_bytes_prefill for r in replayed]


@torch.inference_mode()
def test_true_positions_kept_after_eviction(tiny_lm):
    """After eviction new tokens get their true positions, and the kept slots keep theirs."""
    model = tiny_lm.model
    t = 40
    ids = torch.randint(3, 120, (1, t))
    cache = CompressedCache(StreamingLLM(0.5, sinks=2), model.config.num_hidden_layers)
    forward(model, ids, torch.arange(t)[None], torch.ones(1, t, dtype=torch.bool), cache)
    layer = cache.layers[0]
    assert layer.keys.shape[2] == 20 and cache.get_seq_length() == 20
    assert layer.positions[0, 0].tolist() == [0, 1] + list(range(22, 40))
    nxt = torch.tensor([[5]])
    for step in range(3):
        forward(model, nxt, torch.tensor([[t + step]]), torch.ones(1, 1, dtype=torch.bool), cache)
    # 43 tokens seen → budget 43 − int(43 × 0.5) = 22: the two sinks + the 20 most recent
    assert layer.positions[0, 0].tolist() == [0, 1] + list(range(23, 43))


def test_teacher_forced_full_matches_single_forward(tiny_lm):
    ids = torch.randint(3, 120, (30,)).tolist()
    res = teacher_forced(tiny_lm, [ids[:20]], [ids[20:]], Full())[0]
    with torch.inference_mode():
        tiny_lm.model.set_attn_implementation("sdpa")
        try:
            ref = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0, 19:29]
        finally:
            tiny_lm.model.set_attn_implementation("kvcheck")
    torch.testing.assert_close(res.logits, ref, rtol=0, atol=1e-5)


def test_passkey_task_is_deterministic_and_sized(real_lm):
    task = get_task("passkey")
    a = task.samples(real_lm.tokenizer, 4, 512, seed=3)
    b = task.samples(real_lm.tokenizer, 4, 512, seed=3)
    assert a == b and len({s.id for s in a}) == 4
    for s in a:
        n = len(real_lm.tokenizer(s.prompt)["input_ids"])
        assert 0.95 * 512 <= n <= 512, n
        assert s.answer in s.prompt


def test_forced_decode_along_a_methods_own_greedy_path_reproduces_its_generation(tiny_lm):
    """Decode-time fidelity feeds tokens one per forward: along a method's own greedy tokens its
    argmax is those tokens (match length = all), and ``greedy_tokens`` equals ``generate_batch``."""
    from kvcheck.engine import capture_tokens, forced_decode, greedy_tokens
    from kvcheck.metrics.fidelity import match_length

    prompts = [[5 + (i * 7 + j) % 90 for j in range(40 + 3 * i)] for i in range(3)]
    pre = capture_tokens(tiny_lm, prompts)
    method = StreamingLLM(compression_ratio=0.5, sinks=2)
    toks = greedy_tokens(tiny_lm, pre, method, 12)
    logits = forced_decode(tiny_lm, pre, method, toks)
    assert logits.shape[:2] == (3, 12)
    assert [match_length(t, l) for t, l in zip(toks, logits)] == [12, 12, 12]
    full_toks = greedy_tokens(tiny_lm, pre, Full(), 12)
    full_logits = forced_decode(tiny_lm, pre, Full(), full_toks)
    assert torch.equal(full_logits.argmax(-1), full_toks)
    other = full_toks.clone()
    other[1, 5] = (other[1, 5] + 1) % 100
    assert match_length(other[1], full_logits[1]) == 5


def test_perturbed_layouts_regroup_rotate_and_pad():
    from kvcheck.runner import layout

    items = list(range(10))
    assert layout(items, 4, 0) == ([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], 0)
    groups, pad = layout(items, 8, 1)
    assert (groups, pad) == ([[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]], 1)
    groups, pad = layout(items, 8, 2)
    assert pad == 2 and all(len(g) == 2 for g in groups) and sorted(sum(groups, [])) == items
