"""The cache-layer base and the two slot layouts every built-in layer uses.

Shapes follow transformers: keys and values are ``[batch, kv_heads, slots, head_dim]``. Each layer
also tracks, per slot, the token's true position and whether the slot holds a real token (``valid``:
False for left padding and for slots a sample does not need in a rectangular batch). The attention
function (``kvcheck.attention``) builds its mask from those, so RoPE positions and causality follow
the true positions whatever was evicted.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import CacheLayerMixin

from .. import quant
from ..layer_api import HeldSlots


def tensor_nbytes(t: torch.Tensor | None, float_bytes: int | None) -> int:
    """Bytes of ``t``; ``float_bytes``: floating tensors (but scales) counted at that many bytes each."""
    if t is None:
        return 0
    size = float_bytes if (float_bytes and t.is_floating_point() and t.dtype != quant.SCALE_DTYPE) else t.element_size()
    return t.numel() * size


def visibility(key_valid: torch.Tensor, key_pos: torch.Tensor, q_pos: torch.Tensor,
               q_valid: torch.Tensor) -> torch.Tensor:
    """Bool mask ``[batch, heads, q, slots]``: a query sees valid keys at its position or before.

    key_valid / key_pos: ``[batch, heads, slots]``; q_pos / q_valid: ``[batch, q]``. A padding query
    sees every slot (its output is discarded), so softmax never meets an all-masked row.
    """
    seen = key_valid[:, :, None, :] & (key_pos[:, :, None, :] <= q_pos[:, None, :, None])
    return seen | ~q_valid[:, None, :, None]


class SlotLayer(CacheLayerMixin):
    """One layer of a :class:`kvcheck.cache.CompressedCache`: the base every cache layer subclasses,
    built-in or an adapter's.

    What the cache and the attention function call: ``update(keys, values, positions, valid)`` →
    the keys/values to attend over; ``mask(q_pos, q_valid)``; ``prefill_attention(...)`` (optional);
    ``after_forward(queries, scaling)`` once the layer's attention is computed (compress here);
    ``kept_counts()``, ``nbytes(float_bytes)``, ``slot_masks(heads)`` and ``held()`` to read it back.
    ``prefilled`` is False until the first ``after_forward``; ``valid`` holds every slot's validity.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__()
        self.method = method
        self.layer_idx = layer_idx
        self.n_layers = n_layers
        self.prefilled = False

    def lazy_initialization(self, key_states, value_states):
        self.device, self.dtype = key_states.device, key_states.dtype
        self.is_initialized = True

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:  # abstract in transformers 5.2 (later: get_max_length)
        return -1

    def prefill_attention(self, query, key, value, scaling):
        """``(output, scores)`` when the method computes an unpadded prefill's attention together with
        its scores (see ``EvictionMethod.prefill_attention``); None: plain attention, then scoring."""
        return None

    def after_forward(self, queries: torch.Tensor, scaling: float) -> None:
        self.prefilled = True

    def slot_masks(self, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """valid / positions ``[batch, heads, slots]`` of every slot held (views: do not write)."""
        raise NotImplementedError

    def held(self) -> HeldSlots:
        """What the layer holds, as attention reads it (quantised slots dequantised)."""
        raise NotImplementedError


class PerHeadSlots(SlotLayer):
    """Keys and values at full precision, with per-head ``valid`` / ``positions`` ``[b, h, n]`` (heads
    may keep different tokens). A plain growing cache; eviction layers build on it."""

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        self.valid = self.positions = None

    def update(self, key_states, value_states, positions=None, valid=None, **kwargs):
        b, h, q, _ = key_states.shape
        pos = positions[:, None, :].expand(b, h, q)
        val = valid[:, None, :].expand(b, h, q)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys, self.values, self.positions, self.valid = key_states, value_states, pos, val
        else:
            self.keys = torch.cat([self.keys, key_states], dim=2)
            self.values = torch.cat([self.values, value_states], dim=2)
            self.positions = torch.cat([self.positions, pos], dim=2)
            self.valid = torch.cat([self.valid, val], dim=2)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def mask(self, q_pos, q_valid):
        return visibility(self.valid, self.positions, q_pos, q_valid)

    def kept_counts(self) -> torch.Tensor:
        """Real tokens held per (sample, KV head): ``[b, h]``."""
        return self.valid.sum(dim=-1)

    def nbytes(self, float_bytes: int | None = None) -> int:
        return tensor_nbytes(self.keys, float_bytes) + tensor_nbytes(self.values, float_bytes)

    def slot_masks(self, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.valid, self.positions

    def held(self) -> HeldSlots:
        return HeldSlots(self.keys, self.values, self.positions, self.valid)


class SharedSlots(SlotLayer):
    """Slots whose ``valid`` / ``positions`` ``[b, n]`` are the same for every KV head (every head holds
    every token: quantised caches). :meth:`append_slots` records the new tokens' masks."""

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        self.valid = self.positions = None
        self.kv_heads = 0

    def append_slots(self, positions: torch.Tensor, valid: torch.Tensor, kv_heads: int) -> None:
        if self.valid is None:
            self.positions, self.valid, self.kv_heads = positions, valid, kv_heads
        else:
            self.positions = torch.cat([self.positions, positions], dim=1)
            self.valid = torch.cat([self.valid, valid], dim=1)

    def mask(self, q_pos, q_valid):
        return visibility(self.valid[:, None], self.positions[:, None], q_pos, q_valid)

    def kept_counts(self) -> torch.Tensor:
        return self.valid.sum(dim=-1)[:, None].expand(self.valid.shape[0], self.kv_heads)

    def slot_masks(self, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        b, n = self.valid.shape
        return self.valid[:, None].expand(b, heads, n), self.positions[:, None].expand(b, heads, n)


class FullLayer(PerHeadSlots):
    """The uncompressed cache (``full``): every key and value, at full precision."""
