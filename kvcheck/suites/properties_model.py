"""Properties every declared method must hold end to end, checked by hypothesis on the session's tiny
random Llama (``tiny_lm``, 3 layers, 4 query / 2 KV heads): identity at ratio 0, determinism, batch
invariance through the model, and error against the full cache falling as the budget grows. Prompts
are drawn token ids; the engine left-pads them. Methods a property does not apply to are skipped
with the reason."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import Phase, given
from hypothesis import strategies as st

from kvcheck import engine, oracles
from kvcheck import strategies as kst
from kvcheck.cache import CompressedCache
from kvcheck.methods import EvictionMethod, Full, QuantMethod
from kvcheck.scenarios import fields, held, kept_positions
from kvcheck.strategies import profile_share as share

pytestmark = pytest.mark.usefixtures("one_thread")


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN matching NaN (a NaN is a finiteness failure, not a determinism one)."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    return a.shape == b.shape and bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())


def _held_tensors(cache) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(t.clone() for t in held(layer)) for layer in cache.layers]


def _prefill(lm, method, prompts: list[list[int]]):
    ids, valid = engine.left_pad(prompts, lm.tokenizer.pad_token_id, lm.device)
    pos = (valid.long().cumsum(-1) - 1).clamp_min(0)
    cache = CompressedCache(method, lm.model.config.num_hidden_layers)
    return cache, valid, engine.forward(lm.model, ids, pos, valid, cache)


@torch.inference_mode()
def run_model(lm, method, prompts: list[list[int]], steps: int = 2):
    """Prefill (left-padded) + ``steps`` greedy decode steps: (last-token logits per call, held tensors
    of every layer per call)."""
    cache, valid, first = _prefill(lm, method, prompts)
    logits, states = [first[:, -1]], [_held_tensors(cache)]
    for s in range(steps):
        p = (valid.sum(-1) + s)[:, None]
        logits.append(engine.forward(lm.model, logits[-1].argmax(-1)[:, None], p,
                                     torch.ones_like(p, dtype=torch.bool), cache)[:, -1])
        states.append(_held_tensors(cache))
    return logits, states


@torch.inference_mode()
def forced(lm, method, prompts: list[list[int]], conts: list[list[int]]):
    """Prefill, then every continuation in one forward (teacher forcing, right-padded): (kept positions
    per layer and sample after prefill, the same after the continuation, attention outputs per layer
    ``[b, c, hq, d]``, logits ``[b, c, vocab]``)."""
    cache, valid, _ = _prefill(lm, method, prompts)
    after_prefill = [[kept_positions(layer, r) for r in range(len(prompts))] for layer in cache.layers]
    c = max(len(x) for x in conts)
    cont = torch.tensor([x + [lm.tokenizer.pad_token_id] * (c - len(x)) for x in conts])
    cvalid = torch.tensor([[j < len(x) for j in range(c)] for x in conts])
    cache.recorded = {}
    logits = engine.forward(lm.model, cont, valid.sum(-1, keepdim=True) + torch.arange(c)[None], cvalid, cache,
                            logits_to_keep=0)
    after = [[kept_positions(layer, r) for r in range(len(prompts))] for layer in cache.layers]
    return after_prefill, after, [cache.recorded[i] for i in sorted(cache.recorded)], logits


@share(0.5)
@given(prompts=kst.prompt_batches(kst.token_prompts(max_len=40)))
def test_ratio_zero_is_the_identity(kv_method, tiny_lm, prompts):
    """At compression_ratio 0 an eviction method is the full cache: bit-identical logits and held
    keys, values, positions and validity in every layer, after prefill and after two decode steps."""
    if not isinstance(kv_method, EvictionMethod):
        pytest.skip(f"{kv_method.name} is not an eviction method: it has no compression_ratio to set to 0")
    method = dataclasses.replace(kv_method, compression_ratio=0.0)
    ref_logits, ref_held = run_model(tiny_lm, Full(), prompts)
    logits, states = run_model(tiny_lm, method, prompts)
    for step, (a, b) in enumerate(zip(ref_logits, logits)):
        assert torch.equal(a, b), f"logits differ at call {step}"
    for step, (ref_layers, layers) in enumerate(zip(ref_held, states)):
        for layer_idx, (ref, got) in enumerate(zip(ref_layers, layers)):
            assert all(torch.equal(x, y) for x, y in zip(ref, got)), f"layer {layer_idx} differs at call {step}"


@share(0.5)
@given(prompts=kst.prompt_batches(kst.token_prompts(max_len=40)))
def test_two_runs_are_identical(kv_method, tiny_lm, prompts):
    """Determinism: the same prompts twice give bit-identical logits and held tensors at every call."""
    a_logits, a_held = run_model(tiny_lm, kv_method, prompts)
    b_logits, b_held = run_model(tiny_lm, kv_method, prompts)
    assert all(same(x, y) for x, y in zip(a_logits, b_logits)), "logits differ between two runs"
    for step, (a_layers, b_layers) in enumerate(zip(a_held, b_held)):
        for layer_idx, (a, b) in enumerate(zip(a_layers, b_layers)):
            assert all(same(x, y) for x, y in zip(a, b)), f"layer {layer_idx} differs at call {step}"


@share(0.5)
@given(data=st.data())
def test_batch_invariance_through_the_model(kv_method, tiny_lm, data):
    """A prompt alone and the same prompt left-padded among longer ones: identical kept positions
    (after prefill and after a teacher-forced continuation), and attention outputs and logits for the
    continuation within ``1e-4·|alone| + 1e-5`` (attention) / ``1e-4`` (logits). Prompts use distinct
    tokens: a repeated token gives two keys of exactly the same norm at layer 0 (RoPE keeps norms), a
    tie that the ~1e-7 difference between padded and unpadded prefill decides in later layers; ties
    are not this property (the layer-level test_batch_invariance covers them on bit-identical inputs).
    Quantised caches are not compared here: the ~1e-7 float32 difference between batched and unbatched
    prefill can move a group's range across an fp16 rounding of its scale (2⁻¹⁰ relative) or an entry
    across a code boundary (one step), so their outputs may differ by far more than rounding; the
    layer-level test_batch_invariance holds them bit for bit on bit-identical inputs."""
    if isinstance(kv_method, QuantMethod):
        pytest.skip(f"{kv_method.name} is quantised: a 1e-7 input difference can flip an fp16 scale or a code; "
                    "its batch invariance is checked at the layer level")
    # at least 3 tokens: any rule scoring a token against the mean of two (KeyDiff's cosine to the mean
    # normalised key) ties a 2-token prompt exactly, a tie rounding decides
    prompt = data.draw(kst.token_prompts(min_len=3, max_len=32, unique=True), label="prompt")
    others = data.draw(st.lists(kst.token_prompts(min_len=len(prompt) + 1, max_len=48, unique=True),
                                min_size=1, max_size=2), label="others")
    where = data.draw(st.integers(0, len(others)), label="row")
    conts = data.draw(st.lists(kst.token_prompts(max_len=4), min_size=len(others) + 1, max_size=len(others) + 1),
                      label="continuations")
    batch = others[:where] + [prompt] + others[where:]
    a_pre, a_post, a_att, a_logits = forced(tiny_lm, kv_method, [prompt], [conts[where]])
    b_pre, b_post, b_att, b_logits = forced(tiny_lm, kv_method, batch, conts)
    n = len(conts[where])
    for layer_idx in range(len(a_pre)):
        assert b_pre[layer_idx][where] == a_pre[layer_idx][0], f"layer {layer_idx}: kept after prefill differ"
        assert b_post[layer_idx][where] == a_post[layer_idx][0], f"layer {layer_idx}: kept after continuation differ"
        bad = oracles.mismatch(b_att[layer_idx][where, :n], a_att[layer_idx][0, :n], 1e-5, rtol=1e-4)
        assert bad is None, f"layer {layer_idx}: attention output in the batch vs alone: {bad}"
    bad = oracles.mismatch(b_logits[where, :n], a_logits[0, :n], 1e-4, rtol=1e-4)
    assert bad is None, f"logits in the batch vs alone: {bad}"


N_AVERAGED = 6  # prompts per example whose errors are averaged


def _relative_error(att: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    a, r = torch.cat([x.flatten() for x in att]), torch.cat([x.flatten() for x in ref])
    return float((a - r).norm() / r.norm().clamp_min(1e-12))


@share(0.3, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: a mean over 6 long prompts
@given(prompts=st.lists(kst.token_prompts(min_len=24, max_len=48, unique=True), min_size=N_AVERAGED,
                        max_size=N_AVERAGED),
       cont=kst.token_prompts(min_len=4, max_len=4))
def test_error_shrinks_as_the_budget_grows(kv_method, tiny_lm, prompts, cont):
    """On average, more budget means less error. Exact form: e(m) = mean over 6 drawn prompts of
    ‖out_m − out_full‖ / ‖out_full‖, out = every layer's attention output for a teacher-forced 4-token
    continuation (all layers concatenated); then e(large) ≤ e(small) + 1e-6, with eviction at
    compression_ratio 0.25 (large) vs 0.75 (small), quantisation at the most vs the fewest supported
    bits. Not a per-prompt claim: one prompt may lose from a larger budget, the mean must not. Prompts
    use distinct tokens: six prompts repeating one token make every error tiny and their order
    arbitrary (on 40 random prompt sets the larger budget's mean error was at most 0.56× the smaller's
    for every default method; on six prompts of one repeated token pyramidkv's came out 1.02×)."""
    names = fields(kv_method)
    if "compression_ratio" in names:
        small, large = (dataclasses.replace(kv_method, compression_ratio=r) for r in (0.75, 0.25))
    elif "bits" in names and len(getattr(kv_method, "supported_bits", ())) > 1:
        bits = sorted(kv_method.supported_bits)
        small, large = (dataclasses.replace(kv_method, bits=b) for b in (bits[0], bits[-1]))
    else:
        pytest.skip(f"{kv_method.name} has no budget to vary (no compression_ratio, no choice of bits)")
    conts = [cont] * len(prompts)
    ref = engine.teacher_forced(tiny_lm, prompts, conts, Full(), record_attention=True)

    def mean_error(method) -> float:
        got = engine.teacher_forced(tiny_lm, prompts, conts, method, record_attention=True)
        return sum(_relative_error(g.attention, r.attention) for g, r in zip(got, ref)) / len(ref)

    small_err, large_err = mean_error(small), mean_error(large)
    assert large_err <= small_err + 1e-6, f"larger budget {large_err:.4g} > smaller budget {small_err:.4g}"
