"""kvcheck's ``expected_attention`` and ``keydiff`` against kvpress 0.5.5's own presses, on a tiny seeded
Llama (2 layers, hidden 64, 4 query / 2 KV heads, head_dim 16, float32, nothing downloaded):

- scores: kvpress's ``ExpectedAttentionPress.score`` / ``KeyDiffPress.score`` called on the layer's
  input hidden states and cached keys/values (read by forward pre-hooks and a DynamicCache) equal the
  scores kvcheck's methods compute from what its cache hands them (``ScoreInputs``, pre-RoPE queries
  recovered through ``ScoreInputs.rope``), to rtol 1e-5; Expected Attention's sink columns are
  compared as ranks (kvpress: ``max + 1``, kvcheck: +inf);
- kept sets: kvpress's pipeline (``with press(model)``) and kvcheck's live prefill keep the same
  positions in every layer and KV head, at (n, r) where kvpress's ``max(1, int(n(1 − r)))`` and
  kvcheck's ``n − int(n·r)`` agree, and with ``count="kvpress"`` where they do not;
- the block variant against ``BlockPress(KeyDiffPress(r), block_size)``.

kvpress pins transformers < 5.3: these tests run in the environment benchmarks/kvpress_env.sh builds
(``.venv-kvpress/bin/python -m pytest tests/test_kvpress_parity.py``) and skip, saying so, elsewhere.
"""
from __future__ import annotations


from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from kvcheck import engine
from kvcheck.cache import CompressedCache
from kvcheck.methods.counts import kvpress_keep_count
from kvcheck.methods.expected_attention import ExpectedAttention
from kvcheck.methods.keydiff import KeyDiff
from kvcheck.tiny_model import make_tiny

LAYERS, T = 2, 96


from kvpress_side import kvpress, kvpress_kept, needs_kvpress  # noqa: E402

pytestmark = needs_kvpress


def distinct(n: int, offset: int = 0) -> list[int]:
    """``n`` token ids, no two neighbours alike (no two keys tie)."""
    return [3 + (offset + 37 * i) % 120 for i in range(n)]


@pytest.fixture(scope="module")
def lm():
    """The tiny Llama of the spec, this module's own (kvpress's pipeline sets attributes on it)."""
    return make_tiny(layers=LAYERS, seed=1)


SEEN: dict[int, object] = {}


@dataclass(frozen=True)
class RecordedEA(ExpectedAttention):
    """ExpectedAttention that also keeps the ScoreInputs the cache hands it (per layer)."""

    def score(self, inputs):
        SEEN[inputs.layer_idx] = inputs
        return super().score(inputs)


@dataclass(frozen=True)
class RecordedKeyDiff(KeyDiff):
    def score(self, inputs):
        SEEN[inputs.layer_idx] = inputs
        return super().score(inputs)


@torch.inference_mode()
def kvpress_side(lm, prompt: list[int]):
    """The layers' input hidden states (forward pre-hooks) and a plain prefill's DynamicCache."""
    from transformers import DynamicCache

    hidden = {}
    hooks = [blk.self_attn.register_forward_pre_hook(
        lambda m, args, kw: hidden.__setitem__(m.layer_idx, kw["hidden_states"]), with_kwargs=True)
        for blk in lm.model.model.layers]
    cache = DynamicCache()
    try:
        lm.model(input_ids=torch.tensor([prompt]), use_cache=True, **{engine.cache_arg(lm.model): cache})
    finally:
        for h in hooks:
            h.remove()
    return hidden, cache


@torch.inference_mode()
def kvcheck_prefill(lm, method, prompt: list[int]) -> CompressedCache:
    t = len(prompt)
    cache = CompressedCache(method, LAYERS)
    engine.forward(lm.model, torch.tensor([prompt]), torch.arange(t)[None], torch.ones(1, t, dtype=torch.bool), cache)
    return cache


def press_module(lm, layer: int):
    """What ExpectedAttentionPress reads of the attention module, with the model's rotary embedding (the
    attribute kvpress's pipeline sets on the module itself)."""
    attn = lm.model.model.layers[layer].self_attn
    return SimpleNamespace(config=attn.config, head_dim=attn.head_dim, q_proj=attn.q_proj, layer_idx=layer,
                           rotary_emb=lm.model.model.rotary_emb)


EA_SETTINGS = {
    "defaults": {},
    "no-covariance": {"use_covariance": False},
    "no-vnorm": {"use_vnorm": False},
    "epsilon": {"epsilon": 0.01},
    "sinks-8-future-64": {"n_sink": 8, "n_future_positions": 64},
    "no-sinks": {"n_sink": 0},
}


@pytest.mark.parametrize("setting", list(EA_SETTINGS))
def test_expected_attention_scores_match_kvpress(lm, setting):
    kw = EA_SETTINGS[setting]
    prompt = distinct(T)
    hidden, cache = kvpress_side(lm, prompt)
    SEEN.clear()
    kvcheck_prefill(lm, RecordedEA(0.5, **kw), prompt)
    sink = kw.get("n_sink", 4)
    press = kvpress.ExpectedAttentionPress(0.5, **kw)
    for i in range(LAYERS):
        inputs = SEEN[i]
        assert inputs.rope.kind == "model"
        k, v = cache.layers[i].keys, cache.layers[i].values
        assert torch.equal(inputs.keys, k) and torch.equal(inputs.values, v), "the two prefills differ"
        with torch.inference_mode():
            want = press.score(press_module(lm, i), hidden[i], k, v, None, {})
        got = RecordedEA(0.5, **kw).score(inputs)
        assert got.shape == want.shape == (1, 2, T)
        torch.testing.assert_close(got[..., sink:], want[..., sink:].float(), rtol=1e-5, atol=0)
        # sinks: kvpress max + 1 (finite), kvcheck +inf: both rank the sinks first
        assert bool(torch.isposinf(got[..., :sink]).all())
        assert bool((want[..., :sink] > want[..., sink:].amax()).all())


def test_keydiff_scores_match_kvpress(lm):
    prompt = distinct(T, offset=11)
    _, cache = kvpress_side(lm, prompt)
    SEEN.clear()
    kvcheck_prefill(lm, RecordedKeyDiff(0.5), prompt)
    for i in range(LAYERS):
        k = cache.layers[i].keys
        want = kvpress.KeyDiffPress(0.5).score(None, None, k, None, None, None)
        got = KeyDiff(0.5).score(SEEN[i])
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("block", [16, 40, 128])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_block_keydiff_keeps_what_blockpress_keeps(lm, ratio, block):
    """BlockPress(KeyDiffPress(r), block).compress on the cached keys keeps, per layer and head, the
    positions kvcheck's keydiff(block) keeps in a live prefill (96 tokens: the counts agree)."""
    from kvcheck.adapters.kvpress import kept_positions

    assert kvpress_keep_count(T, ratio) == T - int(T * ratio)
    prompt = distinct(T, offset=5)
    hidden, cache = kvpress_side(lm, prompt)
    ours = kvcheck_prefill(lm, KeyDiff(ratio, block=block), prompt)
    press = kvpress.BlockPress(kvpress.KeyDiffPress(ratio), block_size=block)
    plain = kvcheck_prefill(lm, KeyDiff(ratio), prompt)
    differs = False
    for i in range(LAYERS):
        k, v = cache.layers[i].keys, cache.layers[i].values
        with torch.inference_mode():
            kept_k, _ = press.compress(None, hidden[i], k, v, None, {})
        want = kept_positions(kept_k[0], k[0])
        assert torch.equal(ours.layers[i].positions[0], want), f"layer {i}"
        differs |= not torch.equal(plain.layers[i].positions[0], want)
    if T - int(T * ratio) + block < T:  # two rounds or more (here they end elsewhere than one round)
        assert differs, "several block rounds should keep another set than one round over all"


PIPELINE = {
    "expected_attention": (lambda r: ExpectedAttention(r), lambda r: kvpress.ExpectedAttentionPress(r)),
    "expected_attention-eps": (lambda r: ExpectedAttention(r, epsilon=0.01, n_sink=2),
                               lambda r: kvpress.ExpectedAttentionPress(r, epsilon=0.01, n_sink=2)),
    "keydiff": (lambda r: KeyDiff(r), lambda r: kvpress.KeyDiffPress(r)),
    "block_keydiff": (lambda r: KeyDiff(r, block=32),
                      lambda r: kvpress.BlockPress(kvpress.KeyDiffPress(r), block_size=32)),
}


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("name", list(PIPELINE))
def test_kept_sets_match_kvpress_pipeline(lm, name, ratio):
    """kvpress's pipeline (hooks on the model, DynamicCache) and kvcheck's live prefill keep the same
    positions in every layer and KV head (96 tokens, r·96 an integer: both rules keep the same count)."""
    native, press = PIPELINE[name]
    prompt = distinct(T, offset=2)
    want = kvpress_kept(lm, press(ratio), prompt)
    cache = kvcheck_prefill(lm, native(ratio), prompt)
    for layer, ref in zip(cache.layers, want):
        assert ref.shape[1] == T - int(T * ratio)
        assert torch.equal(layer.positions[0], ref), f"layer {layer.layer_idx}"


@pytest.mark.parametrize("name", ["expected_attention", "keydiff"])
def test_kvpress_count_option_where_the_rules_differ(lm, name):
    """101 tokens at r 0.5: kvpress keeps 50, kvcheck 51. count="kvpress" keeps kvpress's set exactly;
    the default keeps one token more, a superset of it (the same scores, one more taken)."""
    cls, press = {"expected_attention": (ExpectedAttention, kvpress.ExpectedAttentionPress),
                  "keydiff": (KeyDiff, kvpress.KeyDiffPress)}[name]
    prompt = distinct(101, offset=7)
    want = kvpress_kept(lm, press(0.5), prompt)
    same = kvcheck_prefill(lm, cls(0.5, count="kvpress"), prompt)
    more = kvcheck_prefill(lm, cls(0.5), prompt)
    for a, b, ref in zip(same.layers, more.layers, want):
        assert ref.shape[1] == 50 and b.positions.shape[2] == 51
        assert torch.equal(a.positions[0], ref)
        for h in range(ref.shape[0]):
            assert set(ref[h].tolist()) < set(b.positions[0, h].tolist())


def test_kvpress_count_rule_is_compute_n_kept():
    """kvcheck.methods.counts.kvpress_keep_count is kvpress's compute_n_kept for every n ≤ 600 and r in
    0.00…0.99 (and kvcheck's own rule differs from it on most of them)."""
    from kvpress.utils import compute_n_kept

    differ = 0
    for n in range(1, 601):
        for j in range(100):
            r = j / 100
            want = n if r == 0 else compute_n_kept(n, r)
            assert kvpress_keep_count(n, r) == want, (n, r)
            assert KeyDiff(r, count="kvpress").budget(n, 0, 1) == want
            differ += want != n - int(n * r)
    assert differ > 30000  # of 60,000 pairs
