"""``full``: the uncompressed reference cache every other method is compared with."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Method, register


@register
@dataclass(frozen=True)
class Full(Method):
    """Keeps every key and value at full precision (a plain growing cache)."""

    name = "full"

    def make_layer(self, layer_idx: int, n_layers: int):
        from ..cache import EvictionLayer

        return EvictionLayer(None, layer_idx, n_layers)
