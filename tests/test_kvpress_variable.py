"""Variable-count eviction against kvpress itself: ``threshold`` evicts the tokens kvpress's
``DMSPress(KnormPress())`` masks, and ``decoding`` keeps the tokens ``DecodingPress(KnormPress())``
keeps, through a prefill and manual decode steps as kvpress's pipeline runs them
(``pipeline.generate_answer``: one token per forward, ``position_ids`` given, inside the press).

kvpress runs on an SDPA twin of the tiny Llama (same weights): kvpress patches the attention
functions registered when it is imported, so that masked keys get no weight, and kvcheck's own
attention is registered later. kvpress pins transformers < 5.3, so these tests run in the
environment benchmarks/kvpress_env.sh builds and skip, saying so, where kvpress cannot be imported.
"""
from __future__ import annotations

import copy

import pytest
import torch

from kvcheck import engine
from kvcheck.cache import CompressedCache
from kvcheck.methods.decoding import Decoding
from kvcheck.methods.threshold import Threshold
from kvcheck.scenarios import kept_positions

LAYERS = 3  # tests/conftest.py's tiny Llama: 3 layers, 4 query / 2 KV heads, head_dim 16


from kvpress_side import kvpress, needs_kvpress  # noqa: E402

pytestmark = needs_kvpress

PROMPT = [3 + (37 * i) % 120 for i in range(48)]  # distinct tokens: no two keys tie on their norm
TOKENS = [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]


def sdpa_twin(lm):
    from transformers import LlamaForCausalLM

    cfg = copy.deepcopy(lm.model.config)
    cfg._attn_implementation = "sdpa"
    twin = LlamaForCausalLM(cfg).eval()
    twin.load_state_dict(lm.model.state_dict())
    return twin


@torch.inference_mode()
def kvpress_run(model, press, after_each):
    """Prefill ``PROMPT`` then ``TOKENS`` one per forward inside ``press``, as kvpress's pipeline does;
    ``after_each(cache)`` is called after every forward and its results are returned."""
    from transformers import DynamicCache

    cache, out, n = DynamicCache(), [], len(PROMPT)
    with press(model):
        model(input_ids=torch.tensor([PROMPT]), past_key_values=cache, use_cache=True)
        out.append(after_each(cache))
        for s, tok in enumerate(TOKENS):
            model(input_ids=torch.tensor([[tok]]), past_key_values=cache, position_ids=torch.tensor([[n + s]]),
                  use_cache=True)
            out.append(after_each(cache))
    return out


@torch.inference_mode()
def kvcheck_run(lm, method):
    """The same prompt and tokens through kvcheck's cache: kept positions per forward, layer and KV head,
    and the layers' scores (per-slot state) at the end."""
    n = len(PROMPT)
    cache = CompressedCache(method, LAYERS)
    engine.forward(lm.model, torch.tensor([PROMPT]), torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool), cache)
    kept = [[kept_positions(layer, 0) for layer in cache.layers]]
    for s, tok in enumerate(TOKENS):
        engine.forward(lm.model, torch.tensor([[tok]]), torch.tensor([[n + s]]), torch.ones(1, 1, dtype=torch.bool),
                       cache)
        kept.append([kept_positions(layer, 0) for layer in cache.layers])
    return kept, cache


def test_threshold_evicts_what_dms_masks(tiny_lm):
    """``Threshold(t, window=8, decoding=True)`` vs ``DMSPress(KnormPress(), threshold=t,
    sliding_window_size=8, decoding=True)``: after the prefill and each of 12 decode steps, in every
    layer and KV head, kvcheck's evicted positions (seen minus kept) are exactly kvpress's
    ``masked_key_indices``, and kvpress's ``compression_ratio`` (mean over layers of masked /
    (heads × cache length)) is kvcheck's evicted share. t = −0.65 lies inside the tiny model's key norms
    (0.45–0.8), so both evict some and keep some; the test first checks that no kvcheck score sits
    within 1e-4 of t, where float rounding between the two runs could decide."""
    t, w = -0.65, 8
    twin = sdpa_twin(tiny_lm)
    press = kvpress.DMSPress(kvpress.KnormPress(), threshold=t, sliding_window_size=w, decoding=True)
    attns = [layer.self_attn for layer in twin.model.layers]

    def masked(cache):
        sets = []
        for a in attns:
            idx = getattr(a, "masked_key_indices", None)
            got = [set() for _ in range(2)]
            if idx is not None:
                for b, h, p in zip(*(i.tolist() for i in idx)):
                    assert b == 0
                    got[h].add(p)
            sets.append(got)
        return sets, press.compression_ratio

    want = kvpress_run(twin, press, masked)
    kept, cache = kvcheck_run(tiny_lm, Threshold(t, window=w, decoding=True))
    scores = torch.cat([layer.state["score"][layer.valid] for layer in cache.layers])
    assert float((scores - t).abs().min()) > 1e-4, "a score lies within 1e-4 of the threshold"
    evicted_any = False
    for step, ((ref, ratio), got) in enumerate(zip(want, kept)):
        seen = len(PROMPT) + step
        shares = []
        for li in range(LAYERS):
            evicted = [set(range(seen)) - set(h) for h in got[li]]
            assert evicted == ref[li], f"after forward {step}, layer {li}: kvcheck evicted {evicted}, kvpress {ref[li]}"
            shares.append(sum(len(e) for e in evicted) / (2 * seen))
            evicted_any |= any(evicted)
        assert sum(shares) / LAYERS == pytest.approx(ratio, rel=1e-12)
    assert evicted_any and all(len(h) > w for per_layer in kept[-1] for h in per_layer)


def test_decoding_keeps_what_decoding_press_keeps(tiny_lm):
    """``Decoding(target=24, interval=4)`` vs ``DecodingPress(KnormPress(), compression_interval=4,
    target_size=24, hidden_states_buffer_size=0)``: after every forward, each layer's cache length and,
    per KV head, the kept positions (kvpress's held key rows matched to the rows recorded as they
    arrived) are the same: 48 held after prefill, 49..51, 24 at step 4, and so on."""
    twin = sdpa_twin(tiny_lm)
    press = kvpress.DecodingPress(kvpress.KnormPress(), compression_interval=4, target_size=24,
                                  hidden_states_buffer_size=0)
    arrived: list[list[torch.Tensor]] = [[] for _ in range(LAYERS)]  # per layer: [kv_heads, d] rows by position

    def record(module, args, kwargs, output):  # runs before the press's hook: the new rows are the last ones
        q = kwargs["hidden_states"].shape[1]
        arrived[module.layer_idx].extend(kwargs["past_key_values"].layers[module.layer_idx].keys[0, :, -q:]
                                         .transpose(0, 1).clone())

    hooks = [layer.self_attn.register_forward_hook(record, with_kwargs=True) for layer in twin.model.layers]

    def positions(cache):
        out = []
        for li, layer in enumerate(cache.layers):
            rows = torch.stack(arrived[li], dim=1)  # [kv_heads, seen, d]
            heads = []
            for h in range(rows.shape[0]):
                match = (layer.keys[0, h][:, None, :] == rows[h][None]).all(-1)  # [held, seen]
                assert bool((match.sum(-1) == 1).all()), "a held key matches no single arrived row"
                heads.append(sorted(match.float().argmax(-1).tolist()))
            out.append(heads)
        return out

    try:
        want = kvpress_run(twin, press, positions)
    finally:
        for hk in hooks:
            hk.remove()
    got, _ = kvcheck_run(tiny_lm, Decoding(target=24, interval=4))
    sizes = [len(step[0][0]) for step in want]
    assert sizes == [48, 49, 50, 51, 24, 25, 26, 27, 24, 25, 26, 27, 24]
    for step, (ref, mine) in enumerate(zip(want, got)):
        assert mine == ref, f"after forward {step}: kvcheck keeps {mine}, kvpress {ref}"
