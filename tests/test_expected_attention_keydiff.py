"""Expected Attention and KeyDiff: scores against independent float64 hand computations on small
tensors, left padding taking no part, sinks kept, the block variant, the kept count rules, and the
rotation (``ScoreInputs.rope``) the cache hands every eviction layer, live and replayed.

The comparison with kvpress itself is in test_kvpress_parity.py (kvpress's environment only).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from kvcheck import engine
from kvcheck.cache import CompressedCache
from kvcheck.errors import KvcheckError
from kvcheck.layer_api import CACHE_KWARG, KeepPromise, ScoreInputs
from kvcheck.methods import KNorm
from kvcheck.methods.expected_attention import ExpectedAttention
from kvcheck.methods.keydiff import KeyDiff
from kvcheck.methods.rope import NO_ROPE, Rope, rope_of
from kvcheck.strategies import CacheShape

LAYERS = 3  # conftest's tiny Llama: 3 layers, 4 query / 2 KV heads, head_dim 16, RoPE theta 10000


def attn_module(lm, layer: int = 0):
    return lm.model.model.layers[layer].self_attn


def rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def rotation(p: int, d: int, theta: float) -> torch.Tensor:
    """RoPE at position ``p`` as a float64 ``d × d`` matrix, written out: channel i turns with channel
    i + d/2 by the angle p·θ^(−2i/d)."""
    m = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        a = p * theta ** (-2 * i / d)
        c, s = math.cos(a), math.sin(a)
        m[i, i], m[i, i + d // 2], m[i + d // 2, i], m[i + d // 2, i + d // 2] = c, -s, s, c
    return m


def rotated(q_pre: torch.Tensor, theta: float) -> torch.Tensor:
    """``[h, n, d]`` pre-RoPE queries of positions 0..n−1 → the model's (post-RoPE) queries, float64."""
    d = q_pre.shape[-1]
    return torch.stack([q_pre[:, t] @ rotation(t, d, theta).T for t in range(q_pre.shape[1])], dim=1)


def expected_attention_by_hand(q_pre, keys, values, theta, n_sink, future, cov=True, vnorm=True, eps=0.0):
    """One sample's Expected Attention scores of its non-sink tokens ``[kv_heads, n − n_sink]``, float64,
    from the pre-RoPE queries ``[hq, n, d]`` of positions 0..n−1, with a loop per query head and an
    explicit average of ``future`` rotation matrices."""
    q_pre, keys, values = q_pre.double(), keys.double(), values.double()
    hq, n, d = q_pre.shape
    hk = keys.shape[0]
    g = hq // hk
    r_bar = sum(rotation(p, d, theta) for p in range(n, n + future)) / future
    out = torch.zeros(hk, n - n_sink, dtype=torch.float64)
    for h in range(hq):
        q = q_pre[h, n_sink:]
        mu = q.mean(dim=0)
        sigma = (q - mu).T @ (q - mu) / q.shape[0]
        mu_r, sigma_r = r_bar @ mu, r_bar @ sigma @ r_bar.T
        k = keys[h // g, n_sink:]
        logits = k @ mu_r / math.sqrt(d)
        if cov:
            logits = logits + torch.stack([kt @ sigma_r @ kt for kt in k]) / (2 * d)
        out[h // g] += torch.softmax(logits, dim=0) / g
    if vnorm:
        out = (out + eps) * values[:, n_sink:].norm(dim=-1)
    return out


def keydiff_by_hand(keys: torch.Tensor) -> torch.Tensor:
    """``[h, n]``: −cos(k_t, mean of k/‖k‖), float64, one sample's real keys ``[h, n, d]``."""
    k = keys.double()
    anchor = (k / k.norm(dim=-1, keepdim=True)).mean(dim=1, keepdim=True)
    return -(k * anchor).sum(-1) / (k.norm(dim=-1) * anchor.norm(dim=-1))


def block_keydiff_by_hand(keys: torch.Tensor, budget: int, block: int) -> list[list[int]]:
    """BlockPress(KeyDiffPress) kept positions per head, in Python over float64 sets: start from the
    first ``budget`` tokens, then re-score kept ∪ each next block and keep the best ``budget``."""
    h, n, _ = keys.shape
    step = block if block < n else n
    out = []
    for head in range(h):
        kept = list(range(budget))
        for start in range(budget, n, step):
            cur = kept + list(range(start, min(start + step, n)))
            s = keydiff_by_hand(keys[head:head + 1, cur])[0].tolist()
            kept = [cur[j] for j in sorted(range(len(cur)), key=lambda j: -s[j])][:budget]
        out.append(sorted(kept))
    return out


def padded_batch(parts: list[torch.Tensor], garbage: float = 1e4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad ``[h, n_i, d]`` tensors to ``[b, h, t, d]`` with garbage; valid and positions ``[b, t]``."""
    t = max(p.shape[1] for p in parts)
    h, d = parts[0].shape[0], parts[0].shape[2]
    out = torch.full((len(parts), h, t, d), garbage)
    valid = torch.zeros(len(parts), t, dtype=torch.bool)
    for i, p in enumerate(parts):
        out[i, :, t - p.shape[1]:] = p
        valid[i, t - p.shape[1]:] = True
    return out, valid, (valid.long().cumsum(-1) - 1).clamp_min(0)


def prefill(lm, method, prompts: list[list[int]]) -> CompressedCache:
    ids, valid = engine.left_pad(prompts, lm.tokenizer.pad_token_id, lm.device)
    cache = CompressedCache(method, LAYERS)
    with torch.inference_mode():
        engine.forward(lm.model, ids, (valid.long().cumsum(-1) - 1).clamp_min(0), valid, cache)
    return cache


def distinct(n: int, offset: int = 0) -> list[int]:
    return [3 + (offset + 37 * i) % 120 for i in range(n)]


# Expected Attention

@pytest.mark.parametrize("cov, vnorm, eps", [(True, True, 0.0), (False, True, 0.25), (True, False, 0.0)])
def test_expected_attention_scores_by_hand(tiny_lm, cov, vnorm, eps):
    """Two samples (12 and 8 real tokens) left-padded with garbage 1e4: each sample's non-sink scores
    equal the hand computation over its own tokens (pre-RoPE queries rotated to positions 0..n−1 by
    explicit matrices, rotations averaged over positions n..n+6); sinks +inf, padding −inf."""
    theta = rope_theta(tiny_lm.config)
    gen = torch.Generator().manual_seed(3)
    lengths, hq, hk, d, sink, future = [12, 8], 4, 2, 16, 3, 7
    q_pre = [torch.randn(hq, n, d, generator=gen, dtype=torch.float64) for n in lengths]
    keys = [torch.randn(hk, n, d, generator=gen) for n in lengths]
    values = [torch.randn(hk, n, d, generator=gen) for n in lengths]
    q, valid, positions = padded_batch([rotated(x, theta).float() for x in q_pre])
    k, _, _ = padded_batch(keys)
    v, _, _ = padded_batch(values)
    method = ExpectedAttention(0.5, n_future_positions=future, n_sink=sink, use_covariance=cov, use_vnorm=vnorm,
                               epsilon=eps)
    # scaling 0.3, not 1/√16: the rule divides by √head_dim, not by the attention's scaling
    inputs = ScoreInputs(q, k, v, valid, positions, 0.3, 0, 1, rope=rope_of(attn_module(tiny_lm)))
    got = method.score(inputs)
    assert got.shape == (2, hk, 12)
    for i, n in enumerate(lengths):
        pad = 12 - n
        want = expected_attention_by_hand(q_pre[i], keys[i], values[i], theta, sink, future, cov, vnorm, eps)
        torch.testing.assert_close(got[i, :, pad + sink:].double(), want, rtol=2e-5, atol=1e-9)
        assert bool(torch.isposinf(got[i, :, pad:pad + sink]).all()), "the first n_sink real tokens are sinks"
        assert bool(torch.isneginf(got[i, :, :pad]).all()), "padding is never kept"
    if not vnorm:  # softmax over the body, averaged over the group: each head's body sums to 1
        torch.testing.assert_close(got[0, :, sink:].sum(-1), torch.ones(hk))


def test_expected_attention_future_positions_and_rotation_matter(tiny_lm):
    """The same tensors scored without a rotation, or averaging over other future positions, give
    other scores: the hand-checked values above depend on both."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(1, 4, 20, 16, generator=gen), torch.randn(1, 2, 20, 16, generator=gen), torch.randn(
        1, 2, 20, 16, generator=gen)
    valid, pos = torch.ones(1, 20, dtype=torch.bool), torch.arange(20)[None]
    rope = rope_of(attn_module(tiny_lm))
    base = ExpectedAttention(0.5).score(ScoreInputs(q, k, v, valid, pos, 0.25, 0, 1, rope=rope))
    plain = ExpectedAttention(0.5).score(ScoreInputs(q, k, v, valid, pos, 0.25, 0, 1, rope=NO_ROPE))
    near = ExpectedAttention(0.5, n_future_positions=1).score(ScoreInputs(q, k, v, valid, pos, 0.25, 0, 1, rope=rope))
    for other in (plain, near):
        assert not torch.allclose(base[..., 4:], other[..., 4:], rtol=1e-3)


def test_expected_attention_short_prompts_are_all_sinks():
    """A sample of at most n_sink real tokens has no body: every real token is a sink (+inf), no NaN;
    n_sink 0 protects nothing."""
    gen = torch.Generator().manual_seed(5)
    q, valid, pos = padded_batch([torch.randn(4, 9, 8, generator=gen), torch.randn(4, 3, 8, generator=gen)])
    k, _, _ = padded_batch([torch.randn(2, 9, 8, generator=gen), torch.randn(2, 3, 8, generator=gen)])
    inputs = ScoreInputs(q, k, k.clone(), valid, pos, 0.3, 0, 1, rope=NO_ROPE)
    s = ExpectedAttention(0.5, n_sink=4).score(inputs)
    assert not bool(s.isnan().any())
    assert bool(torch.isposinf(s[1, :, 6:]).all()) and bool(torch.isneginf(s[1, :, :6]).all())
    assert bool(torch.isposinf(s[0, :, :4]).all()) and bool(torch.isfinite(s[0, :, 4:]).all())
    s0 = ExpectedAttention(0.5, n_sink=0).score(inputs)
    assert bool(torch.isfinite(s0[0]).all()) and bool(torch.isfinite(s0[1, :, 6:]).all())
    assert ExpectedAttention(0.5, n_sink=0).promises() == KeepPromise()
    assert ExpectedAttention(0.5, n_sink=4).promises() == KeepPromise(sinks=4)


def test_expected_attention_keeps_sinks_and_padded_samples_keep_what_they_keep_alone(tiny_lm):
    """Through the cache (live prefill of the tiny model, r 0.75): every layer and head keeps the 4
    sinks; a left-padded batch keeps, per sample, exactly the positions the sample keeps alone; the
    replayed prefill keeps what the live one keeps."""
    method = ExpectedAttention(0.75)
    prompts = [distinct(70), distinct(41, offset=5)]
    both = prefill(tiny_lm, method, prompts)
    pre = engine.capture_tokens(tiny_lm, prompts)
    with torch.inference_mode():
        replayed = engine.replay(tiny_lm, pre, method)
    for i, p in enumerate(prompts):
        alone = prefill(tiny_lm, method, [p])
        for lb, la, lr in zip(both.layers, alone.layers, replayed.layers):
            kept = lb.positions[i][lb.valid[i]].view(lb.keys.shape[1], -1)
            assert torch.equal(kept, la.positions[0]), f"sample {i}, layer {lb.layer_idx}"
            assert torch.equal(lr.positions, lb.positions) and torch.equal(lr.valid, lb.valid)
            assert kept.shape[1] == len(p) - int(len(p) * 0.75)
            assert bool((kept[:, :4] == torch.arange(4)).all()), f"sinks not kept: {kept[:, :6]}"


def test_expected_attention_bytes_are_the_kept_keys_and_values(tiny_lm):
    """50 tokens at r 0.5 keep 25 per KV head: 3 layers × (keys + values) × 2 heads × 25 × 16 × 4 bytes."""
    cache = prefill(tiny_lm, ExpectedAttention(0.5), [distinct(50)])
    assert cache.kv_bytes() == 3 * 2 * 2 * 25 * 16 * 4 == 19200
    assert cache.kv_bytes(float_bytes=2) == 9600
    shape = CacheShape(batch=1, kv_heads=2, groups=2, seq=50, head_dim=16)
    assert ExpectedAttention(0.5).stated_nbytes(shape, [50], 0, 3, 4) == 19200 // 3


# KeyDiff

def test_keydiff_scores_by_hand_with_padding():
    """−cos(k, mean of normalised real keys) per head, each left-padded sample as the hand computation
    over its own keys; padding (garbage 1e4, which would swing the anchor) −inf."""
    gen = torch.Generator().manual_seed(6)
    parts = [torch.randn(3, 15, 8, generator=gen) * 2 + 0.5, torch.randn(3, 6, 8, generator=gen)]
    k, valid, pos = padded_batch(parts)
    s = KeyDiff(0.5).score(ScoreInputs(torch.zeros(2, 6, 15, 8), k, k, valid, pos, 0.3, 0, 1, rope=NO_ROPE))
    for i, p in enumerate(parts):
        pad = 15 - p.shape[1]
        torch.testing.assert_close(s[i, :, pad:].double(), keydiff_by_hand(p), rtol=1e-5, atol=1e-6)
        assert bool(torch.isneginf(s[i, :, :pad]).all())
    assert bool((s[1, :, 9:].abs() <= 1 + 1e-6).all())


@pytest.mark.parametrize("n, ratio, block", [(40, 0.6, 8), (40, 0.5, 7), (23, 0.25, 4), (40, 0.6, 64)])
def test_keydiff_block_variant_keeps_the_blockwise_set(n, ratio, block):
    """block > 0: the top-budget scores are exactly BlockPress's kept set, computed by hand (Python
    sets, float64); kept tokens score above every dropped one; a block as long as the prompt is one
    round over every token, i.e. plain KeyDiff."""
    gen = torch.Generator().manual_seed(n + block)
    keys = torch.randn(1, 3, n, 8, generator=gen) + torch.linspace(-1, 1, 8)
    valid, pos = torch.ones(1, n, dtype=torch.bool), torch.arange(n)[None]
    method = KeyDiff(ratio, block=block)
    budget = method.budget(n, 0, 1)
    s = method.score(ScoreInputs(torch.zeros(1, 6, n, 8), keys, keys, valid, pos, 0.3, 0, 1, rope=NO_ROPE))
    top = s[0].topk(budget, dim=-1)
    kept = top.indices.sort(dim=-1).values.tolist()
    assert kept == block_keydiff_by_hand(keys[0], budget, block)
    is_kept = torch.zeros_like(s[0], dtype=torch.bool).scatter_(1, top.indices, True)
    dropped_max = s[0].masked_fill(is_kept, -9).amax(-1)
    assert bool((top.values.amin(-1) > dropped_max).all()) and bool((dropped_max < -1.5).all())
    plain = KeyDiff(ratio).score(ScoreInputs(torch.zeros(1, 6, n, 8), keys, keys, valid, pos, 0.3, 0, 1, rope=NO_ROPE))
    plain_kept = plain[0].topk(budget, dim=-1).indices.sort(dim=-1).values.tolist()
    if block >= n:  # one round: the plain scores, the dropped ones lowered by 3
        assert kept == plain_kept
        torch.testing.assert_close(s[0], torch.where(is_kept, plain[0], plain[0] - 3))
    elif (n, block) == (40, 8):  # these seeded keys: several rounds end elsewhere than one round over all
        assert kept != plain_kept


def test_keydiff_block_variant_per_sample_with_padding(tiny_lm):
    """The block rounds run over each sample's real tokens with its own budget: a padded batch keeps
    what each sample keeps alone, through the live cache."""
    method = KeyDiff(0.5, block=16)
    prompts = [distinct(90), distinct(37, offset=3)]
    both = prefill(tiny_lm, method, prompts)
    for i, p in enumerate(prompts):
        alone = prefill(tiny_lm, method, [p])
        for lb, la in zip(both.layers, alone.layers):
            kept = lb.positions[i][lb.valid[i]].view(lb.keys.shape[1], -1)
            assert torch.equal(kept, la.positions[0]), f"sample {i}, layer {lb.layer_idx}"
            assert kept.shape[1] == len(p) - int(len(p) * 0.5)


# counts, ids, checks

def test_kept_count_rules():
    """kvcheck's n − int(n·r) by default; count="kvpress": max(1, int(n·(1 − r))), ratio 0 keeps all."""
    for cls, kw in ((ExpectedAttention, {}), (KeyDiff, {}), (KeyDiff, {"block": 128})):
        ours, theirs = cls(0.5, **kw), cls(0.5, count="kvpress", **kw)
        assert (ours.budget(1001, 0, 1), theirs.budget(1001, 0, 1)) == (501, 500)
        assert (ours.budget(512, 0, 1), theirs.budget(512, 0, 1)) == (256, 256)
        assert (cls(0.29, **kw).budget(100, 0, 1), cls(0.29, count="kvpress", **kw).budget(100, 0, 1)) == (72, 71)
        assert cls(0.0, count="kvpress", **kw).budget(7, 0, 1) == 7
        assert (cls(0.25, **kw).budget(10, 0, 1), cls(0.25, count="kvpress", **kw).budget(10, 0, 1)) == (8, 7)
        assert cls(0.99, count="kvpress", **kw).budget(50, 0, 1) == 1 == cls(0.99, **kw).budget(50, 0, 1)


def test_ids_and_engine():
    assert ExpectedAttention(0.5).id == "expected_attention-r0.5-fp512-s4-covTrue-vnTrue-eps0.0-cntkvcheck"
    assert ExpectedAttention(0.25, epsilon=0.01, count="kvpress").id == (
        "expected_attention-r0.25-fp512-s4-covTrue-vnTrue-eps0.01-cntkvpress")
    assert KeyDiff(0.5).id == "keydiff-r0.5-b0-cntkvcheck"
    assert KeyDiff(0.75, block=128).id == "keydiff-r0.75-b128-cntkvcheck"
    assert ExpectedAttention.engine == "kvpress ExpectedAttentionPress"
    assert KeyDiff.engine.startswith("kvpress KeyDiffPress")


@pytest.mark.parametrize("make, match", [
    (lambda: ExpectedAttention(0.5, n_sink=-1), "n_sink"),
    (lambda: ExpectedAttention(0.5, n_future_positions=0), "n_future_positions"),
    (lambda: ExpectedAttention(0.5, epsilon=float("nan")), "epsilon"),
    (lambda: ExpectedAttention(0.5, epsilon=-0.1), "epsilon"),
    (lambda: ExpectedAttention(0.5, use_covariance=1), "use_covariance"),
    (lambda: ExpectedAttention(0.5, count="vllm"), "count"),
    (lambda: ExpectedAttention(1.0), "compression_ratio"),
    (lambda: KeyDiff(0.5, block=-1), "block"),
    (lambda: KeyDiff(0.5, block=2.5), "block"),
    (lambda: KeyDiff(0.5, count=None), "count")])
def test_bad_settings_are_refused(make, match):
    with pytest.raises(KvcheckError, match=match):
        make()


# the rotation handed to scoring rules

def test_rope_undoes_the_models_rotation(tiny_lm):
    """``ScoreInputs.queries_pre_rope`` of the captured (post-RoPE) queries equals ``q_proj`` of the
    attention's input, read by a forward pre-hook (the model is not changed), to float32 rounding."""
    hidden = {}
    hooks = [blk.self_attn.register_forward_pre_hook(
        lambda m, args, kw: hidden.__setitem__(m.layer_idx, kw["hidden_states"]), with_kwargs=True)
        for blk in tiny_lm.model.model.layers]
    try:
        pre = engine.capture_tokens(tiny_lm, [distinct(60)])
    finally:
        for h in hooks:
            h.remove()
    for i in range(LAYERS):
        attn = attn_module(tiny_lm, i)
        with torch.inference_mode():
            want = attn.q_proj(hidden[i]).view(1, 60, 4, 16).transpose(1, 2)
        inputs = ScoreInputs(pre.queries[i], pre.keys[i], pre.values[i], pre.valid, pre.positions, pre.scaling, i,
                             LAYERS, rope=rope_of(attn))
        got = inputs.queries_pre_rope()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert float((pre.queries[i] - want).abs().max()) > 0.1  # the rotation was really undone
        torch.testing.assert_close(inputs.rope.apply(got, pre.positions), pre.queries[i], rtol=1e-5, atol=1e-5)


def test_rope_with_attention_scaling_matches_transformers():
    """A YaRN rotation (cos/sin scaled by its attention factor ≠ 1): ``Rope.apply`` is transformers'
    ``apply_rotary_pos_emb`` and ``invert`` undoes it (dividing by the factor²)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                       "original_max_position_embeddings": 1024})
    rotary = LlamaRotaryEmbedding(cfg)
    assert abs(rotary.attention_scaling - 1) > 0.1
    rope = Rope(rotary)
    gen = torch.Generator().manual_seed(8)
    x, pos = torch.randn(2, 4, 9, 16, generator=gen), torch.randint(0, 3000, (2, 9), generator=gen)
    cos, sin = rotary(x, pos)
    want, _ = apply_rotary_pos_emb(x, x, cos, sin)
    torch.testing.assert_close(rope.apply(x, pos), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rope.invert(want, pos), x, rtol=1e-5, atol=1e-5)


def test_every_eviction_layer_is_handed_the_rotation(tiny_lm):
    """The cache fills ``rope`` for any eviction method, live and replayed, with the model's rotation;
    tensors driven through a stand-in module without a config get NO_ROPE; ScoreInputs built by hand
    without one refuse ``queries_pre_rope``."""
    live = prefill(tiny_lm, KNorm(0.5), [distinct(20)])
    replayed = engine.replay(tiny_lm, engine.capture_tokens(tiny_lm, [distinct(20)]), KNorm(0.5))
    for cache in (live, replayed):
        assert all(layer.rope.kind == "model" for layer in cache.layers)
    from kvcheck.attention import kvcheck_attention

    cache = CompressedCache(KNorm(0.5), 1)
    b, t = 1, 6
    cache.begin(torch.arange(t)[None], torch.ones(b, t, dtype=torch.bool))
    keys, values = cache.update(torch.randn(b, 2, t, 8), torch.randn(b, 2, t, 8), 0)
    module = SimpleNamespace(layer_idx=0, is_causal=True, num_key_value_groups=2)
    kvcheck_attention(module, torch.randn(b, 4, t, 8), keys, values, None, scaling=0.3, **{CACHE_KWARG: cache})
    assert cache.layers[0].rope is NO_ROPE
    bare = ScoreInputs(torch.zeros(1, 4, 6, 8), keys, values, torch.ones(1, 6, dtype=torch.bool),
                       torch.arange(6)[None], 0.3, 0, 1)
    with pytest.raises(KvcheckError, match="no rope"):
        bare.queries_pre_rope()


class OtherConventionAttention(torch.nn.Module):
    """An attention module whose family (this test module) has no rotary embedding class."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(rope_theta=10000.0)


def test_a_rotation_that_cannot_be_reproduced_fails_only_the_rules_that_read_it():
    rope = rope_of(OtherConventionAttention())
    assert rope.kind == "unsupported"
    inputs = ScoreInputs(torch.randn(1, 4, 9, 8), torch.randn(1, 2, 9, 8), torch.randn(1, 2, 9, 8),
                         torch.ones(1, 9, dtype=torch.bool), torch.arange(9)[None], 0.3, 0, 1, rope=rope)
    with pytest.raises(KvcheckError, match="cannot be reproduced"):
        ExpectedAttention(0.5).score(inputs)
    assert KeyDiff(0.5).score(inputs).shape == (1, 2, 9)
    assert Rope().kind == "none" and rope_of(SimpleNamespace(layer_idx=0)) is NO_ROPE
