"""kvcheck's attention function, registered with transformers' ``AttentionInterface``.

It runs SDPA (or flash-attn on CUDA when installed and no mask is needed) with a mask built from the
cache layer's true positions and validity, records attention outputs when asked, and then lets the
layer compress (``after_forward``): scores are computed from the queries this layer already has, so
no T×T matrix is built and the model keeps SDPA everywhere. Models are never patched. The one
exception: on CPU, a method whose scores need every query's attention weights (H2O) computes an
unpadded prefill's attention output from those same weights (``prefill_attention``), in blocks of rows.
Before a layer's prefill compresses, it is handed the rotation the attention module applied
(:func:`give_rope`, :mod:`kvcheck.methods.rope`), so rules can read the queries before RoPE.
"""
from __future__ import annotations

import functools

import torch

from .layer_api import CACHE_KWARG
from .methods.rope import rope_of
from .work import region

_registered = False


@functools.lru_cache(maxsize=None)
def _flash():
    try:
        from flash_attn import flash_attn_func  # noqa: F401
        return flash_attn_func
    except Exception:  # not installed, or no CUDA build
        return None


def attend(module, query, key, value, mask, scaling) -> torch.Tensor:
    """``[b, hq, q, d]`` × ``[b, hk, n, d]`` → ``[b, q, hq, d]``. Without a mask this is exactly the
    computation transformers' own SDPA path does (causal when ``q > 1``), so the full cache reproduces
    plain transformers; with one, the bool mask ``[b, hk or 1, q, n]`` is spread over the GQA groups."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if mask is None and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        fa = _flash()
        if fa is not None:
            return fa(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                      softmax_scale=scaling, causal=query.shape[2] > 1)
    if mask is not None and mask.shape[1] > 1:
        mask = mask.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    out, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=scaling)
    return out


def kvcheck_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    cache = kwargs.get(CACHE_KWARG)
    if cache is None:  # driven by plain transformers: ordinary causal SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    layer = cache.layers[module.layer_idx]
    q_pos, q_valid = cache.query_positions, cache.query_valid
    fresh = not layer.prefilled
    if fresh:
        give_rope(layer, module)
    mask = None
    with region("attention"):
        if not (fresh and bool(q_valid.all())) and not (query.shape[2] == 1 and bool(layer.valid.all())):
            mask = layer.mask(q_pos, q_valid)
    fused = None
    if fresh and mask is None and query.device.type == "cpu":  # on GPU the attention kernel stays
        with region("method"):
            fused = layer.prefill_attention(query, key, value, scaling)
    if fused is not None:
        out = fused[0]
    else:
        with region("attention"):
            out = attend(module, query, key, value, mask, scaling)
    if cache.recorded is not None:
        cache.recorded[module.layer_idx] = out.detach()
    if cache.captured_queries is not None:
        cache.captured_queries[module.layer_idx] = query
    if cache.time_compression:
        sync(query.device)
        t0 = cache.clock()
        with region("method"):
            layer.after_forward(query, scaling)
        sync(query.device)
        cache.compress_s += cache.clock() - t0
    else:
        with region("method"):
            layer.after_forward(query, scaling)
    return out, None


def give_rope(layer, module) -> None:
    """Hand a cache layer that scores at prefill (one with a ``rope`` slot: the eviction layers) the
    rotation ``module`` applied to its queries and keys, before its prefill's ``after_forward``."""
    if hasattr(layer, "rope"):
        layer.rope = rope_of(module)


def register() -> None:
    """Register ``attn_implementation="kvcheck"`` (idempotent). No mask function is registered, so
    transformers passes ``attention_mask=None`` and kvcheck builds masks from the cache itself."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register("kvcheck", kvcheck_attention)
    _registered = True


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
