"""Variable-count eviction (``threshold``, ``decoding``, ``decoding_ratio``): kept sets against the
step-by-step replays of kvpress's mechanics in ``kvcheck.oracles_variable``, on drawn layer scenarios
and through the tiny random Llama; counts that vary by sample, head and layer; bytes that really
drop; the window that is never evicted; decode-time compression that fires every ``interval`` steps
or on a chunk of ``target`` tokens and brings the cache back to the target; padding invariance."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvcheck import engine, oracles
from kvcheck import oracles_variable as ov
from kvcheck.cache import CompressedCache, layer_for
from kvcheck.cache.variable import VariableLayer
from kvcheck.errors import KvcheckError
from kvcheck.methods import Full
from kvcheck.methods.decoding import Decoding
from kvcheck.methods.decoding_ratio import DecodingRatio
from kvcheck.methods.threshold import Threshold
from kvcheck.methods.variable import kvpress_kept, kvpress_ratio
from kvcheck.scenarios import drive, held, kept_positions, scenarios

LAYERS = 3  # tests/conftest.py's tiny Llama: 3 layers, 4 query / 2 KV heads, head_dim 16


# --- the oracle's replays, on hand-worked examples ---------------------------------------------------

def test_dms_replay_hand_worked():
    """Scores by position [5, −1, 3, −2, 0, −7 | −5, 1], threshold 0, window 2: the prompt's buffer of 6
    lets positions 0..3 go, of which 1 and 3 score below 0. With decoding, position 6 pushes 4 out
    (0 is not below 0: kept) and position 7 pushes 5 out (−7: evicted)."""
    s = [5, -1, 3, -2, 0, -7, -5, 1]
    assert ov.dms_kept(s[:6], 6, [], 0.0, 2, decoding=False) == [0, 2, 4, 5]
    assert ov.dms_kept(s, 6, [1, 1], 0.0, 2, decoding=True) == [0, 2, 4, 6, 7]
    assert ov.dms_kept(s, 6, [1, 1], 0.0, 2, decoding=False) == [0, 2, 4, 5, 6, 7]
    assert ov.dms_kept(s, 6, [2], 0.0, 0, decoding=True) == [0, 2, 4, 7]  # window 0: everything is a candidate
    assert ov.dms_kept(s[:6], 6, [], 0.0, 6, decoding=False) == list(range(6))  # all inside the window


def test_decoding_replay_hand_worked():
    """Scores [3, 1, 4, 1, 5, 9, 2, 6], a 4-token prompt, four 1-token steps, interval 2, target 3: at
    step 2 the held 0..5 are cut to the best three {5, 4, 2}; at step 4 the held {2, 4, 5, 6, 7} to
    {5, 7, 4}. A 3-token chunk with target 3 cuts at once; a target above the held count keeps all."""
    s = [3, 1, 4, 1, 5, 9, 2, 6]
    assert ov.decoding_kept(s, 4, [1, 1, 1, 1], 2, ov.fixed_target(3)) == [4, 5, 7]
    assert ov.decoding_kept(s, 4, [1, 1, 1], 2, ov.fixed_target(3)) == [2, 4, 5, 6]
    assert ov.decoding_kept(s, 5, [3], 100, ov.fixed_target(3)) == [4, 5, 7]
    assert ov.decoding_kept(s, 4, [1, 1, 1, 1], 1, ov.fixed_target(20)) == list(range(8))
    assert ov.ratio_target(0.5)(13) == 6 and ov.ratio_target(0.5)(1) == 1 and ov.ratio_target(0.75)(10) == 2


def test_kvpress_ratio_search_hits_the_target():
    """kvpress's 20-step bisection: ``int(k·(1 − r))`` is the target for every 1 ≤ target < k ≤ 400,
    ratio 0 (everything kept) once k ≤ target; the spec's n=1001 example keeps 500 at target 500."""
    for k in range(1, 401):
        for t in range(1, k):
            assert kvpress_kept(k, t) == t, (k, t)
        assert kvpress_ratio(k, k) == 0.0 and kvpress_kept(k, k + 3) == k
    assert kvpress_kept(1001, 500) == 500


# --- methods: ids, validation, capabilities ----------------------------------------------------------

def test_ids_and_capabilities():
    t = Threshold(-3.5, window=8, decoding=True)
    assert t.id == "threshold-thr-3.5-w8-decTrue-sknorm"
    assert Decoding(target=24, interval=4).id == "decoding-t24-n4-sknorm"
    assert DecodingRatio(0.5, interval=4, scorer="random").id == "decoding_ratio-r0.5-n4-srandom"
    caps = t.capabilities
    assert (caps.kind, caps.evicts_on_decode, caps.slot_state) == ("variable", True, ("score",))
    caps = Threshold(-3.5).capabilities
    assert (caps.evicts_on_decode, caps.slot_state) == (False, ())  # prefill only: no scores kept
    assert Decoding().capabilities.evicts_on_decode
    assert isinstance(layer_for(t, 0, 2), VariableLayer) and isinstance(layer_for(Decoding(), 1, 2), VariableLayer)
    assert t.promises().recent == 8


@pytest.mark.parametrize("make, what", [
    (lambda: Threshold(float("nan")), "threshold"), (lambda: Threshold(True), "threshold"),
    (lambda: Threshold(-1.0, window=-1), "window"), (lambda: Threshold(-1.0, window=2.5), "window"),
    (lambda: Threshold(-1.0, decoding=1), "decoding"), (lambda: Threshold(-1.0, scorer="snapkv"), "scorer"),
    (lambda: Decoding(target=0), "target"), (lambda: Decoding(interval=0), "interval"),
    (lambda: Decoding(scorer="tova"), "scorer"), (lambda: DecodingRatio(1.0), "target_ratio"),
    (lambda: DecodingRatio(-0.1), "target_ratio"), (lambda: DecodingRatio(0.5, interval=-2), "interval"),
])
def test_bad_settings_are_refused(make, what):
    with pytest.raises(KvcheckError, match=what):
        make()


# --- layer level: drawn scenarios against the replays ----------------------------------------------

@st.composite
def variable_scenarios(draw):
    """A drawn layer scenario (1–3 left-padded samples, ≤ 24 tokens, 0–3 chunks of 1–2 tokens) with a
    variable method: a threshold on one of the scenario's own scores (so it evicts some tokens, and
    the token scoring exactly the threshold must stay), a window of 0–6, either ``decoding``; or a
    decoding method with target 1–12 (or ratio) and interval 1–3."""
    scorer = draw(st.sampled_from(["knorm", "random"]), label="scorer")
    sc = draw(scenarios(Threshold(0.0, scorer=scorer), seq=st.integers(1, 24), scale=st.floats(0.05, 8.0)))
    kind = draw(st.sampled_from(["threshold", "decoding", "decoding_ratio"]), label="kind")
    if kind == "threshold":
        every = [s for row in range(sc.batch.shape.batch) for head in ov.token_scores(
            scorer, sc.originals(row)[0], torch.arange(sc.seen()[row]), sc.layer_idx) for s in head]
        method = Threshold(draw(st.sampled_from(every), label="threshold"), window=draw(st.integers(0, 6)),
                           decoding=draw(st.booleans()), scorer=scorer)
    elif kind == "decoding":
        method = Decoding(target=draw(st.integers(1, 12)), interval=draw(st.integers(1, 3)), scorer=scorer)
    else:
        method = DecodingRatio(draw(st.sampled_from([0.0, 0.25, 0.5, 0.8])), interval=draw(st.integers(1, 3)),
                               scorer=scorer)
    return dataclasses.replace(sc, method=method)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=variable_scenarios())
def test_kept_sets_follow_the_replay(sc):
    """Per sample and KV head, after the prefill and every chunk: the kept positions are exactly the
    replay's (``oracles_variable.expected_kept``), held keys and values are the originals of those
    positions, the recent-window promise holds, attention read only held originals, and the layer's
    bytes are its rows cut to those counts (threshold: after every forward every row is cut)."""
    layer, calls = drive(sc)
    keys, values, valid, _ = held(layer)
    counts = []
    for row, want in enumerate(ov.scenario_kept(sc)):
        got = kept_positions(layer, row)
        assert got == want, f"{sc.method.describe()} sample {row}: kept {got}, the replay keeps {want}"
        orig_k, orig_v = sc.originals(row)
        for h, kept in enumerate(got):
            assert torch.equal(keys[row, h][valid[row, h]], orig_k[h, kept])
            assert torch.equal(values[row, h][valid[row, h]], orig_v[h, kept])
            if sc.method.name == "threshold":
                seen = sc.seen()[row]
                assert not oracles.broken_promises(sc.method, kept, sc.batch.lengths[row], seen, seen)
        counts.append([len(k) for k in got])
    assert layer.kept_counts().tolist() == counts
    if sc.method.name == "threshold":
        state = len(sc.method.capabilities.slot_state)
        assert layer.nbytes() == ov.layer_bytes(counts, sc.batch.shape.head_dim, 4, state)
    for call in calls:
        rows = call.q_valid
        bad = oracles.mismatch(call.out[rows], oracles.exact_attention(call)[rows], oracles.rounding_tolerance(call))
        assert bad is None


def test_counts_vary_by_sample_and_head_in_one_layer():
    """Keys built with known norms: sample 0 head 0 has 4 keys of norm 10 (score −10) among norm-1 ones,
    head 1 has none; sample 1 (shorter, left-padded) has 2 in head 0. Threshold −5, window 2: kept
    counts [[8, 12], [6, 8]] of 12 and 8 tokens, and the layer is physically 12 slots wide."""
    gen = torch.Generator().manual_seed(1)
    k = torch.nn.functional.normalize(torch.randn(2, 2, 12, 8, generator=gen), dim=-1)
    k[0, 0, [0, 3, 5, 9]] *= 10
    k[1, 0, [5, 7]] *= 10  # sample 1's real tokens are slots 4..11 (positions 0..7)
    k[1, 1, :4] = 1e4  # padding garbage, never counted
    layer = layer_for(Threshold(-5.0, window=2), 0, 1)
    valid = torch.arange(12)[None] >= torch.tensor([[0], [4]])
    pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
    layer.update(k, k.clone(), pos, valid)
    layer.after_forward(torch.randn(2, 4, 12, 8, generator=gen), 8 ** -0.5)
    assert layer.kept_counts().tolist() == [[8, 12], [6, 8]]
    assert layer.keys.shape[2] == 12 and layer.nbytes() == 2 * 2 * 12 * 2 * 8 * 4
    assert kept_positions(layer, 0)[0] == [1, 2, 4, 6, 7, 8, 10, 11]
    assert kept_positions(layer, 1)[0] == [0, 2, 4, 5, 6, 7]  # positions 1 and 3 (slots 5, 7) evicted


# --- through the tiny model ---------------------------------------------------------------------------

def _record(cache: CompressedCache) -> dict[int, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Record, per layer, every ``(keys, valid)`` the model hands the cache (this instance only)."""
    seen: dict[int, list] = {i: [] for i in range(len(cache.layers))}
    update = cache.update

    def recording(key_states, value_states, layer_idx, *args, **kwargs):
        seen[layer_idx].append((key_states.clone(), cache.query_valid.clone()))
        return update(key_states, value_states, layer_idx, *args, **kwargs)

    cache.update = recording
    return seen


@torch.inference_mode()
def run(lm, method, prompts: list[list[int]], tokens: list[list[int]] | None = None):
    """Left-padded prefill, then one forced decode step per column of ``tokens`` ``[b][steps]``; returns
    (the cache, the keys recorded per layer, kept positions per layer, sample and head after each forward,
    held counts per layer after each forward)."""
    ids, valid = engine.left_pad(prompts, lm.tokenizer.pad_token_id, lm.device)
    pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
    cache = CompressedCache(method, LAYERS)
    rec = _record(cache)
    engine.forward(lm.model, ids, pos, valid, cache)
    kept = [[[kept_positions(layer, r) for r in range(len(prompts))] for layer in cache.layers]]
    lengths = valid.sum(-1)
    for s in range(len(tokens[0]) if tokens else 0):
        p = (lengths + s)[:, None]
        engine.forward(lm.model, torch.tensor([[t[s]] for t in tokens]), p, torch.ones_like(p, dtype=torch.bool), cache)
        kept.append([[kept_positions(layer, r) for r in range(len(prompts))] for layer in cache.layers])
    return cache, rec, kept


def _sample_keys(rec_layer, row: int) -> torch.Tensor:
    """Sample ``row``'s keys ``[kv_heads, seen, d]`` in position order, padding removed."""
    return torch.cat([k[row][:, v[row]] for k, v in rec_layer], dim=1)


def distinct(n: int, offset: int = 0) -> list[int]:
    return [3 + (offset + 37 * i) % 120 for i in range(n)]


def test_threshold_through_the_model_matches_the_replay(tiny_lm):
    """Three left-padded prompts (40, 23, 31 tokens), 4 decode steps, threshold −0.65 on the key norm
    (the tiny model's key norms run about 0.45–0.8), window 4, decoding on: in every layer, sample and KV head,
    after every forward, the kept positions are the replay's over the keys the cache was handed; the
    counts differ between samples, heads and layers; bytes are the rows cut to those counts, below
    the full cache's."""
    method = Threshold(-0.65, window=4, decoding=True)
    prompts = [distinct(40), distinct(23, 5), distinct(31, 9)]
    tokens = [[5, 6, 7, 8]] * 3
    cache, rec, kept = run(tiny_lm, method, prompts, tokens)
    for li, layer_rec in enumerate(rec.values()):
        for row, prompt in enumerate(prompts):
            keys = _sample_keys(layer_rec, row)
            scores = ov.token_scores("knorm", keys, torch.arange(keys.shape[1]), li)
            for step in range(len(kept)):
                want = [ov.expected_kept(method, s, len(prompt), [1] * step) for s in scores]
                assert kept[step][li][row] == want, f"layer {li}, sample {row}, after forward {step}"
    counts = [layer.kept_counts() for layer in cache.layers]
    assert len({tuple(c.flatten().tolist()) for c in counts}) == LAYERS, "every layer keeps other counts"
    assert any(len(set(c[:, h].tolist())) > 1 for c in counts for h in range(2)), "counts equal across samples"
    assert any(len(set(c[r].tolist())) > 1 for c in counts for r in range(3)), "counts equal across heads"
    d = tiny_lm.model.config.hidden_size // tiny_lm.model.config.num_attention_heads
    assert cache.kv_bytes() == sum(ov.layer_bytes(c.tolist(), d, 4, 1) for c in counts)
    full, _, _ = run(tiny_lm, Full(), prompts, tokens)
    assert cache.kv_bytes() < 0.8 * full.kv_bytes()


def test_the_window_is_never_evicted(tiny_lm):
    """Threshold +inf evicts every token it may: what stays is exactly the window. With decoding, the
    newest 5 positions after every step; without, the prompt's last 5 plus every generated token."""
    prompts, tokens = [distinct(30), distinct(12, 3)], [[9, 10, 11]] * 2
    _, _, kept = run(tiny_lm, Threshold(float("inf"), window=5, decoding=True), prompts, tokens)
    for step, per_layer in enumerate(kept):
        for per_sample in per_layer:
            for prompt, heads in zip(prompts, per_sample):
                seen = len(prompt) + step
                assert heads == [list(range(seen - 5, seen))] * 2
    _, _, kept = run(tiny_lm, Threshold(float("inf"), window=5), prompts, tokens)
    for per_sample in kept[-1]:
        for prompt, heads in zip(prompts, per_sample):
            n = len(prompt)
            assert heads == [list(range(n - 5, n + 3))] * 2
    _, _, kept = run(tiny_lm, Threshold(float("-inf"), window=0, decoding=True), prompts, tokens)
    assert all(heads == [list(range(len(p) + 3))] * 2 for ps in kept[-1] for p, heads in zip(prompts, ps))


def test_decoding_fires_every_interval_and_returns_to_the_target(tiny_lm):
    """A 20-token prompt, target 8, interval 3, nine steps: held counts per layer and head after each
    forward are 20 (prefill untouched), 21, 22, 8 (third step), 9, 10, 8, 9, 10, 8; the kept sets are
    the replay's over the keys the cache was handed, and bytes after a cut are 8 slots per row."""
    method = Decoding(target=8, interval=3)
    prompts, tokens = [distinct(20)], [[4, 5, 6, 7, 8, 9, 10, 11, 12]]
    cache, rec, kept = run(tiny_lm, method, prompts, tokens)
    for li in range(LAYERS):
        assert [len(step[li][0][0]) for step in kept] == [20, 21, 22, 8, 9, 10, 8, 9, 10, 8]
        assert [len(step[li][0][1]) for step in kept] == [20, 21, 22, 8, 9, 10, 8, 9, 10, 8]
        keys = _sample_keys(rec[li], 0)
        scores = ov.token_scores("knorm", keys, torch.arange(keys.shape[1]), li)
        for step in range(len(kept)):
            assert kept[step][li][0] == [ov.expected_kept(method, s, 20, [1] * step) for s in scores]
    d = tiny_lm.model.config.hidden_size // tiny_lm.model.config.num_attention_heads
    assert cache.kv_bytes() == LAYERS * ov.layer_bytes([[8, 8]], d, 4, 1)
    assert all(layer.keys.shape[2] == 8 for layer in cache.layers)


@torch.inference_mode()
def test_a_chunk_of_target_tokens_fires_at_once(tiny_lm):
    """A teacher-forced chunk of 6 tokens with target 6 and interval 100 compresses right away (kvpress:
    ``q_len ≥ target_size``): 16 + 6 held → 6; a 5-token chunk does not (16 + 5 held)."""
    for c, want in ((6, 6), (5, 21)):
        method = Decoding(target=6, interval=100)
        ids = torch.tensor([distinct(16)])
        cache = CompressedCache(method, LAYERS)
        engine.forward(tiny_lm.model, ids, torch.arange(16)[None], torch.ones(1, 16, dtype=torch.bool), cache)
        engine.forward(tiny_lm.model, torch.tensor([distinct(c, 50)]), 16 + torch.arange(c)[None],
                       torch.ones(1, c, dtype=torch.bool), cache)
        assert all(layer.kept_counts().tolist() == [[want, want]] for layer in cache.layers)


def test_decoding_ratio_targets_a_share_of_what_was_seen(tiny_lm):
    """target_ratio 0.75, interval 2, prompts of 21 and 10 tokens, 4 steps: cuts at steps 2 and 4 to
    max(1, int(seen·0.25)) per sample: 23 → 5 and 12 → 3, then 5+2 = 7 held of 25 seen → 6 and 3+2 = 5
    held of 14 seen → 3."""
    method = DecodingRatio(0.75, interval=2)
    prompts, tokens = [distinct(21), distinct(10, 7)], [[4, 5, 6, 7]] * 2
    _, rec, kept = run(tiny_lm, method, prompts, tokens)
    for li in range(LAYERS):
        sizes = [[len(step[li][r][0]) for r in range(2)] for step in kept]
        assert sizes == [[21, 10], [22, 11], [5, 3], [6, 4], [6, 3]]
        for row, prompt in enumerate(prompts):
            keys = _sample_keys(rec[li], row)
            scores = ov.token_scores("knorm", keys, torch.arange(keys.shape[1]), li)
            assert kept[-1][li][row] == [ov.expected_kept(method, s, len(prompt), [1] * 4) for s in scores]


@pytest.mark.parametrize("method", [Threshold(-0.65, window=3, decoding=True), Threshold(-0.65, window=3),
                                    Threshold(0.5, window=2, decoding=True, scorer="random"),
                                    Decoding(target=9, interval=2), DecodingRatio(0.5, interval=2)],
                         ids=lambda m: m.id)
def test_padding_invariance(tiny_lm, method):
    """A prompt alone and the same prompt left-padded among two longer ones (distinct tokens: no two
    keys tie), same forced tokens: identical kept positions in every layer after every forward, and the
    alone run's counts do evict (the check is not vacuous)."""
    prompt, others = distinct(14, 2), [distinct(30, 11), distinct(22, 60)]
    tokens = [[20, 21, 22, 23]]
    _, _, alone = run(tiny_lm, method, [prompt], tokens)
    _, _, batch = run(tiny_lm, method, [others[0], prompt, others[1]], tokens * 3)
    for step, (a, b) in enumerate(zip(alone, batch)):
        for li in range(LAYERS):
            assert b[li][1] == a[li][0], f"layer {li} after forward {step}: batch {b[li][1]}, alone {a[li][0]}"
    assert sum(len(h) for per_layer in alone[-1] for h in per_layer[0]) < LAYERS * 2 * (14 + 4)


@pytest.mark.parametrize("method", [Threshold(-0.65, window=3, decoding=True), Decoding(target=9, interval=2)],
                         ids=lambda m: m.id)
def test_replayed_prefill_and_greedy_decoding_match_a_live_run(tiny_lm, method):
    """The suites replay a captured prompt pass (``engine.replay``) instead of a second prefill: the
    replayed cache holds the same slots as a live prefill in every layer, and greedy decoding from it
    (``engine.greedy_tokens``, 6 tokens) is the live run's, token for token."""
    prompts = [distinct(26, 4), distinct(17, 8)]
    pre = engine.capture_tokens(tiny_lm, prompts)
    replayed = engine.replay(tiny_lm, pre, method)
    live, _, _ = run(tiny_lm, method, prompts)
    for a, b in zip(replayed.layers, live.layers):
        for x, y in zip(held(a), held(b)):
            assert torch.equal(x, y)
    tokens = engine.greedy_tokens(tiny_lm, pre, method, 6)
    ids, valid = engine.left_pad(prompts, tiny_lm.tokenizer.pad_token_id, tiny_lm.device)
    with torch.inference_mode():
        cache = CompressedCache(method, LAYERS)
        pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
        nxt = engine.forward(tiny_lm.model, ids, pos, valid, cache)[:, -1].argmax(-1)
        out = [nxt]
        for s in range(5):
            p = (valid.sum(-1) + s)[:, None]
            ones = torch.ones_like(p, dtype=torch.bool)
            nxt = engine.forward(tiny_lm.model, nxt[:, None], p, ones, cache)[:, -1].argmax(-1)
            out.append(nxt)
    assert torch.equal(tokens, torch.stack(out, dim=1))
