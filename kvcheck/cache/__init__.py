"""The compressed KV cache: a transformers ``Cache`` whose layers really hold less.

- :mod:`.layers`: :class:`SlotLayer` (the base of every layer, adapters' included), the per-head and
  shared slot layouts, :class:`FullLayer`; :func:`visibility` (the attention mask rule).
- :mod:`.eviction`: layers that keep only the tokens an eviction method selects.
- :mod:`.quantized`: :class:`QuantLayer`, packed blocks plus a full-precision residual.
- :mod:`.compressed`: :class:`CompressedCache` and :func:`layer_for`, which picks a layer from the
  method's capabilities; no concrete method class is named here.
"""
from .compressed import CompressedCache, full_kv_bytes, kv_ratio, layer_for
from .eviction import DecodeEvictionLayer, EvictionLayer, StatefulEvictionLayer
from .layers import FullLayer, PerHeadSlots, SharedSlots, SlotLayer, tensor_nbytes, visibility
from .quantized import QuantLayer

__all__ = ["CompressedCache", "full_kv_bytes", "kv_ratio", "layer_for", "SlotLayer", "PerHeadSlots", "SharedSlots", "FullLayer", "EvictionLayer",
           "DecodeEvictionLayer", "StatefulEvictionLayer", "QuantLayer", "visibility", "tensor_nbytes"]
