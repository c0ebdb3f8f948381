"""Third-party methods through kvcheck's cache: kvpress presses keep exactly the tokens kvpress's own
pipeline keeps, and transformers' quantised cache generates exactly what transformers generates with it.

kvpress pins transformers < 5.3: its tests run in the environment built by benchmarks/kvpress_env.sh
and skip, saying so, where kvpress cannot be imported. Each quantised backend skips when its package
is missing.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from kvcheck import engine
from kvcheck.cache import CompressedCache
from kvcheck.errors import KvcheckError
from kvcheck.methods import Full
from kvcheck.tasks.base import Sample

LAYERS = 3  # conftest's tiny Llama: 3 layers, 4 query / 2 KV heads, head_dim 16


from kvpress_side import REQUIRED, kvpress, kvpress_kept, needs_kvpress


def unique_prompt(n: int, offset: int = 0) -> list[int]:
    """``n`` distinct token ids (no two keys tie on a key-only score)."""
    return [3 + (offset + 37 * i) % 120 for i in range(n)]


@torch.inference_mode()
def kvcheck_prefill(lm, method, prompts: list[list[int]]) -> CompressedCache:
    ids, valid = engine.left_pad(prompts, lm.tokenizer.pad_token_id, lm.device)
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    cache = CompressedCache(method, LAYERS)
    engine.forward(lm.model, ids, positions, valid, cache)
    return cache


def _presses():
    if kvpress is None:
        return [pytest.param(None, id="kvpress-missing")]
    return [kvpress.StreamingLLMPress(0.5, n_sink=4), kvpress.KnormPress(0.75), kvpress.KeyDiffPress(0.5),
            kvpress.SnapKVPress(0.5, window_size=16), kvpress.TOVAPress(0.75),
            kvpress.PyramidKVPress(0.5, window_size=16), kvpress.RandomPress(0.5, seed=0),
            kvpress.LagKVPress(0.5, lag_size=16), kvpress.CURPress(0.5), kvpress.NonCausalAttnPress(0.5, chunk_size=32)]


@needs_kvpress
@pytest.mark.parametrize("press", _presses(), ids=lambda p: type(p).__name__)
def test_kvpress_adapter_keeps_what_kvpress_keeps(tiny_lm, press):
    """Every press in SUPPORTED keeps, in every layer and KV head, the positions kvpress's own pipeline
    keeps (distinct tokens, so no two scores tie)."""
    from kvcheck.adapters.kvpress import SUPPORTED, KvpressMethod

    assert type(press).__name__ in SUPPORTED

    prompt = unique_prompt(110)
    want = kvpress_kept(tiny_lm, press, prompt)
    cache = kvcheck_prefill(tiny_lm, KvpressMethod(press), [prompt])
    for layer, ref in zip(cache.layers, want):
        got = layer.positions[0]
        assert got.shape == ref.shape, f"layer {layer.layer_idx}: kept {got.shape[1]} tokens, kvpress {ref.shape[1]}"
        assert torch.equal(got, ref), f"layer {layer.layer_idx}: kept sets differ from kvpress's"
    if type(press).__name__ == "PyramidKVPress":  # per-layer budgets really differ, falling with depth
        sizes = [layer.keys.shape[2] for layer in cache.layers]
        assert sizes[0] > sizes[-1] and sizes == sorted(sizes, reverse=True)


@needs_kvpress
def test_every_supported_press_is_checked_against_kvpress():
    from kvcheck.adapters.kvpress import SUPPORTED

    assert {type(p).__name__ for p in _presses()} == set(SUPPORTED)


@needs_kvpress
def test_kvpress_adapter_bytes_drop_to_kvpress_budget(tiny_lm):
    from kvpress.utils import compute_n_kept

    from kvcheck.adapters.kvpress import KvpressMethod

    prompt = unique_prompt(101)
    full = kvcheck_prefill(tiny_lm, Full(), [prompt]).kv_bytes()
    for ratio in (0.25, 0.5, 0.75):
        cache = kvcheck_prefill(tiny_lm, KvpressMethod(kvpress.KnormPress(ratio)), [prompt])
        n = compute_n_kept(101, ratio)
        assert all(layer.keys.shape[2] == n for layer in cache.layers)  # physically smaller, not masked
        assert cache.kv_bytes() == full * n // 101


@needs_kvpress
def test_kvpress_adapter_batch_with_padding_equals_batch_of_one(tiny_lm):
    from kvcheck.adapters.kvpress import KvpressMethod

    method = KvpressMethod(kvpress.SnapKVPress(0.5, window_size=8))
    prompts = [unique_prompt(70), unique_prompt(41, offset=5)]
    both = kvcheck_prefill(tiny_lm, method, prompts)
    for i, p in enumerate(prompts):
        alone = kvcheck_prefill(tiny_lm, method, [p])
        for lb, la in zip(both.layers, alone.layers):
            kept = lb.positions[i][lb.valid[i]].view(lb.keys.shape[1], -1)
            assert torch.equal(kept, la.positions[0]), f"sample {i}, layer {lb.layer_idx}"


@needs_kvpress
def test_kvpress_method_id_params_and_ratio_zero(tiny_lm):
    from kvcheck.adapters.kvpress import KvpressMethod

    m = KvpressMethod(kvpress.SnapKVPress(compression_ratio=0.5, window_size=16, kernel_size=5))
    assert m.id == "kvpress-snapkv-r0.5-window_size16-kernel_size5"
    assert m.compression_ratio == 0.5
    assert json.loads(json.dumps(m.params())) == {"press": "SnapKVPress", "compression_ratio": 0.5,
                                                   "window_size": 16, "kernel_size": 5}
    assert m == KvpressMethod(kvpress.SnapKVPress(0.5, window_size=16)) and hash(m) == hash(
        KvpressMethod(kvpress.SnapKVPress(0.5, window_size=16)))
    zero = dataclasses.replace(m, compression_ratio=0.0)
    assert zero.press.compression_ratio == 0.0 and zero.id == "kvpress-snapkv-r0.0-window_size16-kernel_size5"
    cache = kvcheck_prefill(tiny_lm, zero, [unique_prompt(30)])
    assert all(layer.keys.shape[2] == 30 for layer in cache.layers)
    with pytest.raises(KvcheckError, match="compression_ratio"):
        dataclasses.replace(m, compression_ratio=1.0)


@needs_kvpress
def test_kvpress_adapter_refuses_what_it_cannot_feed(tiny_lm):
    from kvcheck.adapters.kvpress import KvpressMethod

    with pytest.raises(KvcheckError, match="ObservedAttentionPress is not one of"):
        KvpressMethod(kvpress.ObservedAttentionPress(0.5))
    with pytest.raises(KvcheckError, match="ExpectedAttentionPress is not one of"):
        KvpressMethod(kvpress.ExpectedAttentionPress(0.5))
    with pytest.raises(KvcheckError, match="needs a kvpress ScorerPress"):
        KvpressMethod(kvpress.AdaKVPress(kvpress.SnapKVPress(0.5)))
    with pytest.raises(KvcheckError, match="refused a 12-token prompt"):
        kvcheck_prefill(tiny_lm, KvpressMethod(kvpress.SnapKVPress(0.5, window_size=16)), [unique_prompt(12)])


@needs_kvpress
def test_kvpress_unlisted_press_of_ones_own(tiny_lm):
    from kvcheck.adapters.kvpress import KvpressMethod

    @dataclasses.dataclass
    class FirstChannelPress(kvpress.ScorerPress):
        def score(self, module, hidden_states, keys, values, attentions, kwargs):
            return keys[..., 0]

    with pytest.raises(KvcheckError, match="unlisted=True"):
        KvpressMethod(FirstChannelPress(0.5))
    m = KvpressMethod(FirstChannelPress(0.5), unlisted=True)
    assert m.id == "kvpress-first_channel-r0.5"
    cache = kvcheck_prefill(tiny_lm, m, [unique_prompt(40)])
    layer = cache.layers[1]
    full = kvcheck_prefill(tiny_lm, Full(), [unique_prompt(40)]).layers[1]
    want = full.keys[0, :, :, 0].topk(20, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(layer.positions[0], want)


@pytest.mark.skipif(kvpress is not None, reason="kvpress is installed here: the missing-package message cannot show")
def test_kvpress_missing_says_what_to_install():
    from kvcheck.adapters.kvpress import KvpressMethod

    with pytest.raises(KvcheckError, match=r"kvcheck\[kvpress\]"):
        KvpressMethod(object())


# transformers' QuantizedCache backends

def _hf(backend, **kw):
    from kvcheck.adapters.hf_quantized import HFQuantized, backend_available

    why = backend_available(backend)
    if why and backend in REQUIRED:
        pytest.fail(f"KVCHECK_REQUIRE_ADAPTERS names {backend}: {why}")
    if why:
        pytest.skip(why)
    return HFQuantized(backend=backend, **kw)


HF_CONFIGS = {
    "fp8": dict(backend="fp8"),
    "quanto-b4": dict(backend="quanto", nbits=4, q_group_size=16, residual_length=4),
    "quanto-b2": dict(backend="quanto", nbits=2, q_group_size=16, residual_length=4),
    "hqq-b4": dict(backend="hqq", nbits=4, q_group_size=16, residual_length=4, axis_key=1, axis_value=1),
}


@pytest.mark.parametrize("config", list(HF_CONFIGS))
def test_hf_quantized_generates_what_transformers_generates(tiny_lm, config):
    """12 greedy tokens after a 96-token prompt (the residual flushes twice): the same tokens and the
    same last logits as ``model.generate`` with transformers' own QuantizedCache."""
    from transformers import QuantizedCache

    method = _hf(**HF_CONFIGS[config])
    model, t, steps = tiny_lm.model, 96, 12
    ids = torch.tensor([unique_prompt(t)])
    with torch.inference_mode():
        ref_cache = QuantizedCache(config=model.config, backend=method.backend, **method.layer_kwargs())
        ref = model.generate(ids, max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=0,
                             output_logits=True, return_dict_in_generate=True,
                             **{engine.cache_arg(model): ref_cache})
        cache = CompressedCache(method, LAYERS)
        one = torch.ones(1, 1, dtype=torch.bool)
        logits = engine.forward(model, ids, torch.arange(t)[None], torch.ones(1, t, dtype=torch.bool), cache)[:, -1]
        out = [int(logits.argmax(-1))]
        for s in range(steps - 1):
            logits = engine.forward(model, torch.tensor([[out[-1]]]), torch.tensor([[t + s]]), one, cache)[:, -1]
            out.append(int(logits.argmax(-1)))
    assert out == ref.sequences[0, t:].tolist()
    torch.testing.assert_close(logits[0].float(), ref.logits[-1][0].float(), rtol=1e-4, atol=1e-4)
    assert all(c.eq(t + steps - 1).all() for c in cache.kept_counts())


def test_hf_quantized_quanto_bytes_are_the_backends_storage(tiny_lm):
    """quanto 4-bit, groups of 16 along channels: per tensor, packed codes (half a byte per value) +
    float32 scale and shift per group (counted at 2 bytes in the fp16-equivalent figure)."""
    numel, prompt = 1 * 2 * 64 * 16, [unique_prompt(64)]
    quanto = kvcheck_prefill(tiny_lm, _hf("quanto", nbits=4, q_group_size=16), prompt)
    full = kvcheck_prefill(tiny_lm, Full(), prompt)
    assert quanto.kv_bytes() == LAYERS * 2 * (numel // 2 + 2 * (numel // 16) * 4)
    assert quanto.kv_bytes(float_bytes=2) == LAYERS * 2 * (numel // 2 + 2 * (numel // 16) * 2)
    assert quanto.kv_bytes(float_bytes=2) / full.kv_bytes(float_bytes=2) == pytest.approx(0.375)


def test_hf_quantized_fp8_bytes_are_the_backends_storage(tiny_lm):
    """fp8: one byte per value + one float32 scale per tensor."""
    fp8 = kvcheck_prefill(tiny_lm, _hf("fp8"), [unique_prompt(64)])
    assert fp8.kv_bytes() == LAYERS * 2 * (1 * 2 * 64 * 16 + 4)


def test_hf_quantized_left_padding_and_counts(tiny_lm):
    """Per-sample token counts follow the real tokens; a padded batch generates what each sample
    generates alone (quanto groups run along channels, so padding shares no group with real tokens)."""
    method = _hf("quanto", nbits=4, q_group_size=16, residual_length=4)
    prompts = [unique_prompt(50), unique_prompt(23, offset=9)]
    cache = kvcheck_prefill(tiny_lm, method, prompts)
    assert [int(c) for c in cache.kept_counts()[0][:, 0]] == [50, 23]
    assert cache.layers[0].get_seq_length() == 50
    samples = [Sample(f"s{i}", "", "", "tiny") for i in range(2)]
    pre = engine.capture_tokens(tiny_lm, prompts)
    pre.samples = samples
    both = engine.generate_batch(tiny_lm, samples, method, 8, eos_ids=[], shared=pre)
    for i, p in enumerate(prompts):
        alone_pre = engine.capture_tokens(tiny_lm, [p])
        alone_pre.samples = samples[i:i + 1]
        alone = engine.generate_batch(tiny_lm, samples[i:i + 1], method, 8, eos_ids=[], shared=alone_pre)
        assert both[i].output_ids == alone[0].output_ids


def test_hf_quantized_options_are_checked():
    from kvcheck.adapters.hf_quantized import HFQuantized, backend_available

    with pytest.raises(KvcheckError, match="unknown backend 'nope'"):
        HFQuantized(backend="nope")
    if backend_available("fp8") is None:
        with pytest.raises(KvcheckError, match="takes no nbits"):
            HFQuantized(backend="fp8", nbits=4)
    if backend_available("quanto") is None:
        with pytest.raises(KvcheckError, match="nbits"):
            HFQuantized(backend="quanto", nbits=3)
        assert HFQuantized(backend="quanto", nbits=2).id == "hf_quantized-bequanto-b2-gNone-resNone-akNone-avNone"
    if backend_available("hqq") is not None:
        with pytest.raises(KvcheckError, match="pip install hqq"):
            HFQuantized(backend="hqq")
