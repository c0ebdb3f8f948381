"""The method catalogue (h2o, pyramidkv, tova, knorm, random, int, fp8) on a tiny random Llama:
kept counts, bytes held, determinism, identity at ratio 0, budgets held while generating, validation."""
from __future__ import annotations

import pytest
import torch

from kvcheck import engine
from kvcheck.cache import CompressedCache
from kvcheck.errors import KvcheckError
from kvcheck.methods import (FP8, H2O, REGISTRY, TOVA, Full, IntQuant, KNorm, PyramidKV, RandomKeep,
                             ScoreInputs)
from kvcheck.methods.base import keep_count
from kvcheck.methods.h2o import received_attention
from kvcheck.tasks.base import Sample

LAYERS, KV_HEADS, HEAD_DIM = 3, 2, 16  # conftest's tiny Llama: 3 layers, 4 query / 2 KV heads, hidden 64

EVICTION = {
    "h2o": lambda r: H2O(compression_ratio=r, recent=4),
    "tova": lambda r: TOVA(compression_ratio=r),
    "knorm": lambda r: KNorm(compression_ratio=r),
    "random": lambda r: RandomKeep(compression_ratio=r, seed=3),
    "pyramidkv": lambda r: PyramidKV(compression_ratio=r, window=4),
}
QUANT = {
    "int8": IntQuant(bits=8, group_size=8),
    "int4": IntQuant(bits=4, group_size=32),  # ≥ head_dim: one group per head
    "fp8": FP8(),
    "int4-res": IntQuant(bits=4, group_size=8, residual=5),
    "fp8-res": FP8(residual=5),
}
PROMPTS = [[(7 * i + 3) % 127 + 1 for i in range(45)], [(5 * i + 11) % 127 + 1 for i in range(31)]]


@pytest.fixture(scope="module")
def lm(tiny_lm):
    cfg = tiny_lm.config
    assert (cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads) == (
        LAYERS, KV_HEADS, HEAD_DIM)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small only lose to thread hand-offs, badly on a busy machine
    yield tiny_lm
    torch.set_num_threads(threads)


def text_samples() -> list[Sample]:
    return [Sample(f"s{i}", text, "", "tiny") for i, text in
            enumerate(["the pass key is 31415, remember it well. " * 2, "short prompt, left padded."])]


@torch.inference_mode()
def decode_steps(lm, method, prompts, steps: int = 0):
    """Prefill ``prompts`` (left-padded), then greedy-decode ``steps`` tokens; yields the cache after
    prefill and after each step (the same object, read it before the next step)."""
    ids, valid = engine.left_pad(prompts, lm.tokenizer.pad_token_id, lm.device)
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    cache = CompressedCache(method, LAYERS)
    logits = engine.forward(lm.model, ids, positions, valid, cache)
    yield cache
    for step in range(steps):
        pos = (valid.sum(-1) + step)[:, None]
        nxt = logits[:, -1].argmax(-1)[:, None]
        logits = engine.forward(lm.model, nxt, pos, torch.ones_like(pos, dtype=torch.bool), cache)
        yield cache


def prefill(lm, method, prompts) -> CompressedCache:
    return next(decode_steps(lm, method, prompts))


def all_methods():
    return [f(0.5) for f in EVICTION.values()] + list(QUANT.values())


def test_catalogue_is_registered():
    for name, cls in [("h2o", H2O), ("pyramidkv", PyramidKV), ("tova", TOVA), ("knorm", KNorm),
                      ("random", RandomKeep), ("int", IntQuant), ("fp8", FP8)]:
        assert REGISTRY[name] is cls
    ids = [m.id for m in all_methods()]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8])
@pytest.mark.parametrize("name", EVICTION)
def test_kept_counts_follow_the_budget(lm, name, ratio):
    method = EVICTION[name](ratio)
    cache = prefill(lm, method, PROMPTS)
    for layer_idx, layer in enumerate(cache.layers):
        want = torch.tensor([[method.budget(len(p), layer_idx, LAYERS)] * KV_HEADS for p in PROMPTS])
        assert torch.equal(layer.kept_counts(), want)
        for pos, valid in zip(layer.positions.flatten(0, 1), layer.valid.flatten(0, 1)):
            kept = pos[valid]
            assert bool((kept[1:] > kept[:-1]).all())  # positional order


@pytest.mark.parametrize("layers", [1, 2, 30])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("n", [10, 100, 1000, 4097])
def test_pyramid_budgets_fall_linearly_with_the_uniform_total(n, ratio, layers):
    method = PyramidKV(compression_ratio=ratio, window=32)
    uniform = keep_count(n, ratio)
    budgets = [method.budget(n, i, layers) for i in range(layers)]
    assert sum(budgets) == layers * uniform
    assert budgets == sorted(budgets, reverse=True)
    assert all(min(32, uniform) <= b <= n for b in budgets)
    if layers > 1 and uniform - 32 >= 40:
        assert budgets[0] > budgets[-1]


@pytest.mark.parametrize("name", EVICTION)
def test_eviction_bytes_drop_with_the_ratio(lm, name):
    method = EVICTION[name](0.5)
    cache = prefill(lm, method, PROMPTS[:1])
    n = len(PROMPTS[0])
    slots = [method.budget(n, i, LAYERS) for i in range(LAYERS)]
    state = 2 * KV_HEADS * sum(slots) if method.stateful else 0  # H2O's running scores, as fp16
    assert cache.kv_bytes(float_bytes=2) == 4 * KV_HEADS * HEAD_DIM * sum(slots) + state
    full = 4 * KV_HEADS * HEAD_DIM * n * LAYERS
    assert abs(cache.kv_bytes(float_bytes=2) / full - keep_count(n, 0.5) / n) <= 1 / HEAD_DIM


def quant_token_bytes(method) -> int:
    """Bytes per token, KV head and tensor once quantised."""
    if isinstance(method, FP8):
        return HEAD_DIM + 2
    g = min(method.group_size, HEAD_DIM)
    return HEAD_DIM * method.bits // 8 + 4 * HEAD_DIM // g


@pytest.mark.parametrize("name", QUANT)
def test_quant_bytes_are_codes_scales_and_residual(lm, name):
    method = QUANT[name]
    n = len(PROMPTS[0])
    for steps, cache in enumerate(decode_steps(lm, method, PROMPTS[:1], steps=3)):
        held = n + steps
        res = min(method.residual, held)
        want = LAYERS * 2 * KV_HEADS * ((held - res) * quant_token_bytes(method) + res * HEAD_DIM * 2)
        assert cache.kv_bytes(float_bytes=2) == want
        assert [c.tolist() for c in cache.kept_counts()] == [[[held] * KV_HEADS]] * LAYERS
    ratio = quant_token_bytes(method) / (2 * HEAD_DIM)
    assert ratio == {"int8": 0.75, "int4": 0.375, "fp8": 0.5625}.get(name, ratio)


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.id)
def test_two_runs_are_identical(lm, method):
    a = engine.generate_batch(lm, text_samples(), method, max_new_tokens=5, eos_ids=[])
    b = engine.generate_batch(lm, text_samples(), method, max_new_tokens=5, eos_ids=[])
    assert [r.output_ids for r in a] == [r.output_ids for r in b]
    conts = [[3, 4, 5], [6, 7]]
    fa = engine.teacher_forced(lm, PROMPTS, conts, method)
    fb = engine.teacher_forced(lm, PROMPTS, conts, method)
    assert all(torch.equal(x.logits, y.logits) for x, y in zip(fa, fb))


@pytest.mark.parametrize("name", EVICTION)
def test_ratio_zero_is_the_full_cache(lm, name):
    method, conts = EVICTION[name](0.0), [[3, 4, 5], [6, 7]]
    ref = engine.teacher_forced(lm, PROMPTS, conts, Full())
    got = engine.teacher_forced(lm, PROMPTS, conts, method)
    assert all(torch.equal(x.logits, y.logits) for x, y in zip(ref, got))
    ref = engine.generate_batch(lm, text_samples(), Full(), max_new_tokens=6, eos_ids=[])
    got = engine.generate_batch(lm, text_samples(), method, max_new_tokens=6, eos_ids=[])
    assert [r.output_ids for r in ref] == [r.output_ids for r in got]
    assert got[0].kv_ratio == pytest.approx(ref[0].kv_ratio, rel=1 / HEAD_DIM)


@pytest.mark.parametrize("name", ["h2o", "tova"])
def test_decode_methods_hold_the_budget_while_generating(lm, name):
    method = EVICTION[name](0.5)
    for step, cache in enumerate(decode_steps(lm, method, PROMPTS, steps=6)):
        for layer_idx, layer in enumerate(cache.layers):
            seen = [len(p) + step for p in PROMPTS]
            want = torch.tensor([method.budget(n, layer_idx, LAYERS) for n in seen])
            assert torch.equal(layer.kept_counts(), want[:, None].expand(-1, KV_HEADS))
            if name == "h2o":  # the recent window is always held; the state is raw attention
                newest = torch.tensor(seen)[:, None, None] - 1
                held = (layer.positions > newest - method.recent) & layer.valid
                assert bool((held.sum(-1) == method.recent).all())
                score = layer.state["score"]
                assert score.shape == layer.positions.shape and bool(torch.isfinite(score).all())
                assert float(score.max()) <= max(seen)
            else:  # TOVA averages over all heads: one keep set per layer
                assert torch.equal(layer.positions[:, :1].expand_as(layer.positions), layer.positions)


def test_h2o_accumulates_every_query(lm):
    """Nothing is evicted at ratio 0, so each KV head's running scores sum to the queries seen (every
    query's attention sums to 1), prompt and generated alike."""
    for step, cache in enumerate(decode_steps(lm, H2O(compression_ratio=0.0, recent=4), PROMPTS, steps=4)):
        for layer in cache.layers:
            seen = torch.tensor([len(p) + step for p in PROMPTS], dtype=torch.float32)
            torch.testing.assert_close(layer.state["score"].sum(-1), seen[:, None].expand(-1, KV_HEADS))


def test_h2o_chunks_match_dense_attention():
    g = torch.Generator().manual_seed(0)
    b, hk, groups, t, d = 2, 2, 3, 23, 8
    q, k = torch.randn(b, hk * groups, t, d, generator=g), torch.randn(b, hk, t, d, generator=g)
    valid = torch.ones(b, t, dtype=torch.bool)
    valid[1, :6] = False  # left padding
    pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
    kv, kp = valid[:, None].expand(b, hk, t), pos[:, None].expand(b, hk, t)
    chunked = received_attention(q, k, kv, kp, pos, valid, 0.3, chunk=5)
    logits = q @ k.repeat_interleave(groups, 1).transpose(-1, -2) * 0.3
    seen = torch.ones(t, t, dtype=torch.bool).tril() & valid[:, None, None, :]
    attn = torch.softmax(logits.masked_fill(~seen, float("-inf")), -1).nan_to_num() * valid[:, None, :, None]
    dense = attn.sum(2).view(b, hk, groups, t).mean(2)
    torch.testing.assert_close(chunked, dense)
    torch.testing.assert_close(chunked.sum(-1), valid.sum(-1, keepdim=True).float().expand(b, hk))



@pytest.mark.parametrize("chunk", [4, 7, 100])
def test_h2o_attention_and_scores_in_one_pass_match_sdpa(chunk):
    """The fused prefill (H2O.prefill_attention's path): the output is SDPA's causal GQA attention and
    the scores are bit-identical to scoring alone, however the rows are blocked."""
    g = torch.Generator().manual_seed(1)
    b, hk, groups, t, d = 2, 3, 3, 19, 8
    q, k, v = (torch.randn(b, h, t, d, generator=g) for h in (hk * groups, hk, hk))
    valid = torch.ones(b, t, dtype=torch.bool)
    pos = torch.arange(t)[None].expand(b, t)
    kv, kp = valid[:, None].expand(b, hk, t), pos[:, None].expand(b, hk, t)
    scores, out = received_attention(q, k, kv, kp, pos, valid, 0.3, queries_last=True, chunk=chunk, values=v)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(out, want.transpose(1, 2))
    assert torch.equal(scores, received_attention(q, k, kv, kp, pos, valid, 0.3, queries_last=True, chunk=chunk))


def test_h2o_fused_prefill_keeps_what_separate_scoring_keeps(lm):
    """Live H2O (fused attention + scores on CPU) and a replay of a shared prefill (SDPA, then scoring)
    keep the same tokens with the same running scores (to float tolerance: the layers after the first
    see inputs that differ in the last bits)."""
    calls = []

    class Counted(H2O):  # counts the fused prefills, to show the live run took that path
        def prefill_attention(self, queries, keys, values, scaling):
            calls.append(queries.shape[2])
            return super().prefill_attention(queries, keys, values, scaling)

    method = Counted(compression_ratio=0.5, recent=2)
    prompt = [PROMPTS[0]]
    live = prefill(lm, method, prompt)
    assert calls == [len(PROMPTS[0])] * LAYERS and all(layer.fused_scores is None for layer in live.layers)
    replayed = engine.replay(lm, engine.capture_tokens(lm, prompt), method)
    assert live.layers[0].keys.shape[2] < len(PROMPTS[0])  # it did evict
    for a, r in zip(live.layers, replayed.layers):
        assert torch.equal(a.positions, r.positions)
        torch.testing.assert_close(a.state["score"], r.state["score"])

def test_knorm_keeps_the_lowest_norm_keys():
    keys = torch.arange(1, 11, dtype=torch.float32).flip(0)[None, None, :, None].expand(1, 1, 10, 4)
    inputs = ScoreInputs(keys, keys, keys, torch.ones(1, 10, dtype=torch.bool), torch.arange(10)[None], 1.0, 0, 1)
    top = KNorm(0.5).score(inputs).topk(5, dim=-1).indices.sort().values
    assert top.tolist() == [[[5, 6, 7, 8, 9]]]


def test_random_depends_on_seed_not_on_the_batch(lm):
    def kept(seed, prompts, row):
        layer = prefill(lm, RandomKeep(0.5, seed=seed), prompts).layers[1]
        return [pos[valid].tolist() for pos, valid in zip(layer.positions[row], layer.valid[row])]

    alone = kept(1, PROMPTS[1:], 0)
    assert alone == kept(1, PROMPTS, 1)  # same tokens alone and left-padded in a batch
    assert alone != kept(2, PROMPTS[1:], 0)


def test_quant_round_trip_error():
    x = torch.randn(2, 3, 7, 16, generator=torch.Generator().manual_seed(0)) * 5
    x[0, 0, 0] = 0.0  # an all-zero vector
    fp8 = FP8()
    back = fp8.dequantize(fp8.quantize_keys(x, None), torch.float32)
    scale = x.abs().amax(-1, keepdim=True) / 448
    assert bool((back - x).abs().le(x.abs() / 16 + scale / 2 ** 6 + 1e-7).all())
    int8 = IntQuant(bits=8, group_size=8)
    back = int8.dequantize(int8.quantize_values(x, None), torch.float32)
    span = x.view(2, 3, 7, 2, 8).aminmax(dim=-1)
    step = ((span.max - span.min) / 255).repeat_interleave(8, -1)
    assert bool(((back - x).abs() <= step * 0.51 + 1e-3).all())


@pytest.mark.parametrize("make", [
    lambda: H2O(compression_ratio=1.0), lambda: H2O(recent=-1), lambda: H2O(recent=2.5),
    lambda: TOVA(compression_ratio=-0.1), lambda: KNorm(compression_ratio="0.5"),
    lambda: RandomKeep(seed=-1), lambda: RandomKeep(seed=True),
    lambda: PyramidKV(beta=0), lambda: PyramidKV(kernel=4), lambda: PyramidKV(window=0),
    lambda: IntQuant(bits=2), lambda: IntQuant(bits=16), lambda: IntQuant(group_size=0),
    lambda: IntQuant(residual=-1), lambda: FP8(residual=-3), lambda: FP8(residual=1.0),
])
def test_bad_parameters_are_rejected(make):
    with pytest.raises(KvcheckError):
        make()


def test_int_group_size_must_divide_head_dim(lm):
    with pytest.raises(KvcheckError, match="divide head_dim"):
        prefill(lm, IntQuant(group_size=6), PROMPTS)


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.id)
def test_batched_equals_alone(lm, method):
    together = engine.generate_batch(lm, text_samples(), method, max_new_tokens=6, eos_ids=[])
    alone = [engine.generate_batch(lm, [s], method, max_new_tokens=6, eos_ids=[])[0] for s in text_samples()]
    assert [r.output_ids for r in together] == [r.output_ids for r in alone]
