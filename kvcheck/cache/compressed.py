"""CompressedCache: a transformers ``Cache`` whose layers really hold less, one layer per model layer,
each chosen from the method's capabilities (:func:`layer_for`)."""
from __future__ import annotations

import time

import torch
from transformers.cache_utils import Cache

from .eviction import DecodeEvictionLayer, EvictionLayer, StatefulEvictionLayer
from .layers import FullLayer, SlotLayer
from ..work import region
from .quantized import QuantLayer


def layer_for(method, layer_idx: int, n_layers: int) -> SlotLayer:
    """The cache layer for ``method`` at ``layer_idx`` of ``n_layers``, by its capabilities: full,
    eviction (prefill only, while generating too, with per-slot state), quantised, or the method's
    own (``custom``: ``method.make_layer``)."""
    caps = method.capabilities
    if caps.kind == "full":
        return FullLayer(method, layer_idx, n_layers)
    if caps.kind == "eviction":
        if caps.slot_state:
            return StatefulEvictionLayer(method, layer_idx, n_layers)
        cls = DecodeEvictionLayer if caps.evicts_on_decode else EvictionLayer
        return cls(method, layer_idx, n_layers)
    if caps.kind == "quant":
        if not method.quantizes_layer(layer_idx, n_layers):  # a layer the method keeps at full precision
            return FullLayer(method, layer_idx, n_layers)
        return QuantLayer(method, layer_idx, n_layers)
    if caps.kind == "variable":  # kept counts that vary by sample and head (kvcheck.methods.variable)
        from .variable import VariableLayer
        return VariableLayer(method, layer_idx, n_layers)
    return method.make_layer(layer_idx, n_layers)


class CompressedCache(Cache):
    """One compression method applied to every layer of a model, through the public Cache API.

    The engine calls :meth:`begin` before each forward with the true positions and validity of the
    new tokens; the model then calls :meth:`update` per layer as usual.
    """

    def __init__(self, method, n_layers: int):
        super().__init__(layers=[layer_for(method, i, n_layers) for i in range(n_layers)])
        self.method = method
        self.query_positions = self.query_valid = None
        self.recorded: dict[int, torch.Tensor] | None = None  # layer → attention output, when recording
        self.captured_queries: dict[int, torch.Tensor] | None = None  # layer → queries, when capturing
        self.time_compression = False  # when True, seconds spent compressing add up in compress_s
        self.clock = time.perf_counter  # what compress_s is read from (bench may pass process CPU time)
        self.compress_s = 0.0

    def begin(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        self.query_positions, self.query_valid = positions, valid.bool()

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        with region("cache"):
            return self.layers[layer_idx].update(key_states, value_states, self.query_positions, self.query_valid)

    def kv_bytes(self, float_bytes: int | None = None) -> int:
        """Bytes held by every layer. ``float_bytes`` counts floating tensors at that many bytes per
        element (2 = the fp16-equivalent figure) instead of their real element size."""
        return sum(layer.nbytes(float_bytes) for layer in self.layers)

    def kept_counts(self) -> list[torch.Tensor]:
        return [layer.kept_counts() for layer in self.layers]


def full_kv_bytes(config, slots: int, batch: int, float_bytes: int = 2) -> int:
    """Bytes a full cache holds for ``slots`` tokens × ``batch`` samples of a model with ``config``
    (keys and values of every layer, ``float_bytes`` per element: 2 is the fp16-equivalent figure)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * slots * batch * float_bytes


def kv_ratio(cache: CompressedCache, config, slots: int, batch: int) -> float:
    """What ``cache`` holds over what a full cache would, both counted fp16-equivalent: the one KV ratio
    kvcheck reports (eval records, bench points, the throughput suite)."""
    return cache.kv_bytes(float_bytes=2) / full_kv_bytes(config, slots, batch)
