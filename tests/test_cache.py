"""Bytes really drop: eviction holds (1 − ratio) of full, KIVI's codes + scales + residual are small."""
from __future__ import annotations

import pytest
import torch

from kvcheck.cache import CompressedCache, full_kv_bytes, kv_ratio
from kvcheck.engine import forward
from kvcheck.methods import KIVI, Full, SnapKV, StreamingLLM


def prefill(lm, method, t: int, batch: int = 1) -> CompressedCache:
    torch.manual_seed(0)
    ids = torch.randint(3, 120, (batch, t))
    cache = CompressedCache(method, lm.model.config.num_hidden_layers)
    with torch.inference_mode():
        forward(lm.model, ids, torch.arange(t)[None].expand(batch, t), torch.ones(batch, t, dtype=torch.bool), cache)
    return cache


@pytest.mark.parametrize("t, batch", [(1, 1), (37, 3), (512, 2)])
def test_full_kv_bytes_is_what_a_full_cache_holds(tiny_lm, tiny_lm_d64, t, batch):
    """The one analytic full-cache size (every KV ratio's denominator) equals a measured full cache,
    in real bytes and fp16-equivalent, so a full cache's ratio is exactly 1."""
    for lm in (tiny_lm, tiny_lm_d64):
        cfg = lm.model.config
        cache = prefill(lm, Full(), t, batch)
        assert cache.kv_bytes() == full_kv_bytes(cfg, t, batch, float_bytes=4)
        assert cache.kv_bytes(float_bytes=2) == full_kv_bytes(cfg, t, batch)
        assert kv_ratio(cache, cfg, t, batch) == 1.0
        half = prefill(lm, StreamingLLM(0.5), t, batch)
        assert kv_ratio(half, cfg, t, batch) == half.kv_bytes(float_bytes=2) / cache.kv_bytes(float_bytes=2)


@pytest.mark.parametrize("method", [StreamingLLM(0.25), StreamingLLM(0.5), SnapKV(0.5, window=8), SnapKV(0.75, window=8)])
def test_eviction_bytes_follow_ratio(tiny_lm, method):
    full = prefill(tiny_lm, Full(), 512).kv_bytes()
    cache = prefill(tiny_lm, method, 512)
    assert cache.kv_bytes() / full == pytest.approx(1 - method.compression_ratio, abs=0.02)
    for layer in cache.layers:  # physically smaller tensors, not masks
        assert layer.keys.shape[2] == 512 - int(512 * method.compression_ratio)
        assert layer.kept_counts().eq(layer.keys.shape[2]).all()


@pytest.mark.parametrize("t", [1024, 4096])
@pytest.mark.parametrize("method,limit", [(KIVI(bits=4, group_size=128, residual=32), 0.30),
                                          (KIVI(bits=2, group_size=64, residual=32), 0.20)])
def test_kivi_bytes_with_scales_and_residual(tiny_lm_d64, method, limit, t):
    full = prefill(tiny_lm_d64, Full(), t).kv_bytes(float_bytes=2)
    cache = prefill(tiny_lm_d64, method, t)
    assert cache.kv_bytes(float_bytes=2) / full <= limit
    layer = cache.layers[0]
    assert layer.keys.shape[2] == method.residual  # the residual window stays full precision
    assert layer.qk.codes.dtype == torch.uint8 and layer.qk.scale.dtype == torch.float16
    assert layer.get_seq_length() == t


def test_kivi_residual_flushes_in_blocks_while_decoding(tiny_lm):
    method = KIVI(bits=2, group_size=16, residual=8)
    cache = prefill(tiny_lm, method, 100)
    layer = cache.layers[0]
    assert (layer.n_quant, layer.keys.shape[2]) == (92, 8)
    with torch.inference_mode():
        for step in range(20):
            forward(tiny_lm.model, torch.tensor([[5]]), torch.tensor([[100 + step]]),
                    torch.ones(1, 1, dtype=torch.bool), cache)
    assert (layer.n_quant, layer.keys.shape[2]) == (108, 12)  # one block of 16 flushed at 24 > 8 + 16
    assert layer.positions[0].tolist() == list(range(120))
