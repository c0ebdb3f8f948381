"""Properties every declared method must hold at the layer level, checked by hypothesis.

One cache layer is driven exactly as the model drives it (``kvcheck.scenarios.drive``) on drawn
shapes (batch, KV heads, GQA groups, length, head_dim), left-padded batches whose padding holds
garbage, keys with outlier channels, a drawn layer position and up to 4 decode chunks. The method is
the declared one or the same method with its knobs redrawn (``kvcheck.scenarios.variants``: ratio,
bits, residual, sinks, recent and observation windows), so drawn prompts outgrow its protected regions
and reach every code path. Each declared method draws its own examples. Reference values come from
``kvcheck.oracles``. Methods a property does not apply to are skipped with the reason.

Each property names the rules it exercises (``kvcheck.exercised``): the run reports per property how
many examples exercised each (a prompt token evicted, an eviction while generating, a cut the scores
decide, attention over an evicted cache or over dequantised slots), and a property that never
exercised a rule that applies to the method fails. Codec-level properties are in
test_properties_codec.py, model-level ones in test_properties_model.py.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from kvcheck import oracles, oracles_variable
from kvcheck import strategies as kst
from kvcheck.exercised import exercises, note
from kvcheck.methods import EvictionMethod, Full, QuantMethod
from kvcheck.scenarios import Scenario, drive, fields, held, kept_positions, near_tie, scenarios
from kvcheck.strategies import profile_share as share

pytestmark = pytest.mark.usefixtures("one_thread")

ATTENTION_BOUND = 8.0  # |q|, |k|, |v| bound where outputs are compared: float32 logits stay well resolved


def evicts(m) -> bool:
    return isinstance(m, EvictionMethod) and not isinstance(m, Full)


def quantises(m) -> bool:
    return isinstance(m, QuantMethod)


def protected(m, n: int) -> int:
    """Tokens of an n-token prompt the method keeps whatever their scores (sinks, recent, window)."""
    p = m.promises()
    return sum(min(k, n) for k in (p.sinks, p.recent, p.window) if k is not None)


EVICTED_AT_PREFILL = ("a prompt token evicted", evicts)
EVICTED_WHILE_GENERATING = ("an eviction while generating", lambda m: evicts(m) and oracles.evicts_on_decode(m))
QUANTISED = ("a token quantised", quantises)
VARIABLE_EVICTED = ("a token evicted by a variable-count rule", lambda m: m.capabilities.kind == "variable")


@exercises(EVICTED_AT_PREFILL, EVICTED_WHILE_GENERATING, QUANTISED, VARIABLE_EVICTED)
@share(2.0)
@given(data=st.data())
def test_kept_slots_follow_the_budget(kv_method, data):
    """Per layer, sample and KV head, after prefill and decode chunks: kept count = the method's formula
    (``oracles.expected_counts``), kept positions strictly increasing (unique, sorted) and within the
    tokens seen, held keys/values the original ones of those positions (eviction), and every token
    the method promises (sinks, recent window, observation window) kept."""
    sc = data.draw(scenarios(kv_method, min_steps=1, max_steps=4, redraw_residual=st.just(True)))
    layer, _ = drive(sc)
    m, b = sc.method, sc.batch
    if isinstance(m, EvictionMethod):
        for n in set(b.lengths):
            assert 1 <= m.budget(n, sc.layer_idx, sc.n_layers) <= n, f"budget of {n} tokens out of [1, {n}]"
    heads = b.shape.kv_heads
    variable = m.capabilities.kind == "variable"
    if variable:  # counts follow the scores: the replay of the documented rule (kvcheck.oracles_variable)
        kept_sets = oracles_variable.scenario_kept(sc)
        assert [kept_positions(layer, r) for r in range(b.shape.batch)] == kept_sets, "kept sets differ from the rule's"
        assert layer.kept_counts().tolist() == [[len(k) for k in row] for row in kept_sets]
        note(VARIABLE_EVICTED, any(len(k) < n for row, n in zip(kept_sets, sc.seen()) for k in row))
    else:
        want = oracles.expected_counts(sc)
        assert layer.kept_counts().tolist() == [[w] * heads for w in want]
    if evicts(m):
        at_prefill = [oracles.documented_budget(m, n, sc.layer_idx, sc.n_layers) for n in b.lengths]
        note(EVICTED_AT_PREFILL, any(k < n for k, n in zip(at_prefill, b.lengths)))
        new_tokens = sum(step[0].shape[2] for step in sc.steps)
        note(EVICTED_WHILE_GENERATING, any(k + new_tokens > w for k, w in zip(at_prefill, want)))
    note(QUANTISED, getattr(layer, "n_quant", 0) > 0)
    keys, values, valid, _ = held(layer)
    for row, (prompt, seen) in enumerate(zip(b.lengths, sc.seen())):
        orig_k, orig_v = sc.originals(row)
        for h, kept in enumerate(kept_positions(layer, row)):
            assert all(a < c for a, c in zip(kept, kept[1:])), f"positions not strictly increasing: {kept}"
            assert all(0 <= p < seen for p in kept), f"positions outside 0..{seen - 1}: {kept}"
            if isinstance(m, QuantMethod):
                assert kept == list(range(seen)), "a quantised cache holds every token"
                continue
            slots = valid[row, h]
            assert torch.equal(keys[row, h][slots], orig_k[h, kept]), f"head {h}: held keys are not the originals"
            assert torch.equal(values[row, h][slots], orig_v[h, kept]), f"head {h}: held values are not the originals"
            if isinstance(m, EvictionMethod) or variable:
                budget = prompt if variable else m.budget(prompt, sc.layer_idx, sc.n_layers)
                broken = oracles.broken_promises(m, kept, prompt, seen, budget)
                assert not broken, f"{m.describe()}, sample {row}, head {h}: " + "; ".join(broken)


@share(0.5)
@given(data=st.data())
def test_full_budget_is_the_identity(kv_method, data):
    """With a compression_ratio whose budget is every token seen (``kst.ratio_for_budget(N, N)`` for
    the most tokens any sample sees, N), an eviction method is the full cache: bit-identical held
    keys, values, positions and validity, and bit-identical attention outputs, at every call."""
    if isinstance(kv_method, Full) or "compression_ratio" not in fields(kv_method):
        pytest.skip(f"{kv_method.name} has no compression_ratio: it has no budget to fill")
    sc = data.draw(scenarios(kv_method, bound=ATTENTION_BOUND))
    most = max(sc.seen())
    everything = dataclasses.replace(sc.method, compression_ratio=kst.ratio_for_budget(most, most))
    sc = dataclasses.replace(sc, method=everything)
    layer, calls = drive(sc)
    ref_layer, ref_calls = drive(dataclasses.replace(sc, method=Full()))
    for name, got, want in zip(("keys", "values", "valid", "positions"), held(layer), held(ref_layer)):
        assert torch.equal(got, want), f"held {name} differ from the full cache's"
    for step, (call, ref) in enumerate(zip(calls, ref_calls)):
        assert torch.equal(call.out, ref.out), f"call {step}: attention output differs from the full cache's"


def shortest(sc: Scenario) -> int:
    """The row of the most padded sample."""
    return min(range(sc.batch.shape.batch), key=lambda r: sc.batch.lengths[r])


def check_batch_invariance(sc: Scenario) -> None:
    """The shortest sample of ``sc`` alone vs in its batch (see test_batch_invariance)."""
    i = shortest(sc)
    gaps: list[float] = []
    alone_layer, alone_calls = drive(sc.sample(i), gaps)
    if near_tie(gaps):
        event("near tie at a cut")
        return
    m, n = sc.method, sc.batch.lengths[i]
    if evicts(m):
        note(SCORED_CUT, protected(m, n) < oracles.documented_budget(m, n, sc.layer_idx, sc.n_layers) < n)
    note(QUANTISED, getattr(alone_layer, "n_quant", 0) > 0)
    layer, calls = drive(sc)
    assert kept_positions(layer, i) == kept_positions(alone_layer, 0), "kept positions differ"
    k, v, valid, _ = held(layer)
    ak, av, avalid, _ = held(alone_layer)
    for h in range(valid.shape[1]):
        got_k, got_v = k[i, h][valid[i, h]], v[i, h][valid[i, h]]
        alone_k, alone_v = ak[0, h][avalid[0, h]], av[0, h][avalid[0, h]]
        assert torch.equal(got_k, alone_k) and torch.equal(got_v, alone_v), (
            f"{sc.method.describe()}, KV head {h}: the held keys/values differ from the sample alone's "
            f"(bit-identical inputs): max |Δ| keys {float((got_k - alone_k).abs().max())}, "
            f"values {float((got_v - alone_v).abs().max())}")
    pad = sc.batch.shape.seq - sc.batch.lengths[i]
    for step, (call, alone) in enumerate(zip(calls, alone_calls)):
        got = call.out[i, pad:] if step == 0 else call.out[i]
        bad = oracles.mismatch(got, alone.out[0], oracles.rounding_tolerance(alone), rtol=1e-4)
        assert bad is None, f"call {step}: attention output in the batch vs alone: {bad}"


SCORED_CUT = ("a cut the scores decide (budget between the protected tokens and the prompt)", evicts)


@exercises(SCORED_CUT, QUANTISED)
@share(2.5)
@given(data=st.data())
def test_batch_invariance(kv_method, data):
    """The shortest sample alone and the same sample (bit for bit) left-padded among longer ones with
    garbage in the padding: identical kept positions, identical held keys/values, attention outputs
    within ``1e-4·|alone| + oracles.rounding_tolerance``.

    Unless the sample alone ranks two tokens at a cut within a relative gap of ``scenarios.TIE`` (a
    near tie): a batch computes the same scores with other float rounding, so a near tie may break
    either way. Such examples are counted as the event "near tie at a cut" and not compared; tensor
    scales start at 0.05 here, as all-zero tensors tie every score. A ``residual`` is always redrawn
    here: padding changes which tokens are flushed only around a sample's length.
    """
    sc = data.draw(scenarios(kv_method, bound=ATTENTION_BOUND, min_batch=2, scale=st.floats(0.05, 8.0),
                             redraw_residual=st.just(True), redraw_knobs=st.just(True), min_len=8))
    check_batch_invariance(sc)


@pytest.mark.parametrize("offset", [0, 1])
def test_batch_invariance_at_the_residual_boundary(kv_method, offset):
    """The explicit edge case of test_batch_invariance for methods with a full-precision residual: a
    3-token sample, residual 3 + offset, batched with a 9-token one, then three 1-token decode steps
    (the sample alone reaches residual + 1 tokens only while decoding; its batch flushed at prefill)."""
    if "residual" not in fields(kv_method):
        pytest.skip(f"{kv_method.name} has no full-precision residual")
    method = dataclasses.replace(kv_method, residual=3 + offset)
    gen = torch.Generator().manual_seed(0)
    shape = kst.CacheShape(batch=2, kv_heads=2, groups=2, seq=9, head_dim=16)
    q, k, v = (torch.randn(s, generator=gen) for s in (shape.q(), shape.kv(), shape.kv()))
    valid, positions = kst.left_padding([9, 3], 9)
    steps = [tuple(torch.randn(s, generator=gen) for s in (shape.q(1), shape.kv(1), shape.kv(1)))
             for _ in range(3)]
    check_batch_invariance(Scenario(method, kst.CacheBatch(shape, q, k, v, valid, positions, [9, 3]), 0, 1, steps))


def reads_originals(sc: Scenario, call) -> bool:
    """Whether every valid slot a call attended over holds the original key and value of its true position."""
    for row in range(call.keys.shape[0]):
        orig_k, orig_v = sc.originals(row)
        slot, pos = call.key_valid[row], call.key_pos[row]
        heads = torch.arange(slot.shape[0])[:, None].expand_as(slot)[slot]
        if not (torch.equal(call.keys[row][slot], orig_k[heads, pos[slot]])
                and torch.equal(call.values[row][slot], orig_v[heads, pos[slot]])):
            return False
    return True


ATTENDED_AFTER_EVICTION = ("a decode call over an evicted cache", evicts)
ATTENDED_OVER_CODES = ("a decode call over dequantised slots", quantises)


@exercises(ATTENDED_AFTER_EVICTION, ATTENDED_OVER_CODES)
@share(1.5)
@given(data=st.data())
def test_attention_is_exact_over_the_kept_set(kv_method, data):
    """At prefill and for every decode chunk, every query head and every real query: kvcheck's attention
    output equals ``oracles.exact_attention`` (softmax by hand in float64) over only the held slots,
    within ``oracles.rounding_tolerance``; for exact caches (full, eviction) the held slots are the
    original keys/values of their true positions, so this is attention over the kept set."""
    sc = data.draw(scenarios(kv_method, bound=ATTENTION_BOUND, min_steps=1, max_steps=4, redraw_residual=st.just(True)))
    _, calls = drive(sc)
    lengths = torch.tensor(sc.batch.lengths)
    evicted = codes = False
    for step, call in enumerate(calls):
        if step:  # a decode call: did it attend over fewer slots than tokens seen, or over codes?
            seen = lengths + sum(s[0].shape[2] for s in sc.steps[:step])
            evicted |= bool((call.key_valid[:, 0].sum(-1) < seen).any())
            codes |= isinstance(sc.method, QuantMethod) and not reads_originals(sc, call)
        if not isinstance(sc.method, QuantMethod):
            assert reads_originals(sc, call), f"call {step}: attention read keys/values that are not the originals"
        rows = call.q_valid
        bad = oracles.mismatch(call.out[rows], oracles.exact_attention(call)[rows], oracles.rounding_tolerance(call))
        assert bad is None, f"call {step}: {bad}"
    note(ATTENDED_AFTER_EVICTION, evicted)
    note(ATTENDED_OVER_CODES, codes)


@share(1.0)
@given(data=st.data())
def test_finite_in_finite_out(kv_method, data):
    """Finite inputs up to ±1e4 (outlier channels included): every held tensor (keys, values, running
    state, dequantised codes) and every attention output of a real query is finite."""
    sc = data.draw(scenarios(kv_method, bound=kst.BOUND))
    layer, calls = drive(sc)
    for step, call in enumerate(calls):
        assert bool(torch.isfinite(call.out[call.q_valid]).all()), f"call {step}: non-finite attention output"
    keys, values, _, _ = held(layer)
    assert bool(torch.isfinite(keys).all()) and bool(torch.isfinite(values).all()), "non-finite held keys/values"
    for name, t in getattr(layer, "state", {}).items():
        assert bool(torch.isfinite(t).all()), f"non-finite state {name!r}"


@share(1.0)
@given(data=st.data())
def test_bytes_follow_the_stated_formula(kv_method, data):
    """The bytes a layer holds after prefill equal the method's stated layout (``oracles.expected_bytes``)."""
    sc = data.draw(scenarios(kv_method, max_steps=0))
    want = oracles.expected_bytes(sc.method, sc.batch.shape, sc.batch.lengths, sc.layer_idx, sc.n_layers,
                                  sc.batch.keys.element_size())
    if want is None:
        pytest.skip(f"{sc.method.name} states no byte layout kvcheck.oracles knows")
    layer, _ = drive(sc)
    assert layer.nbytes() == want, f"{sc.method.describe()}: holds {layer.nbytes()} bytes, the formula says {want}"
