"""``full``: the uncompressed reference cache every other method is compared with."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Method, register


@register
@dataclass(frozen=True)
class Full(Method):
    """Keeps every key and value at full precision (a plain growing cache)."""

    name = "full"
    layer_kind = "full"

    def stated_nbytes(self, shape, lengths: list[int], layer_idx: int, n_layers: int, elt: int) -> int:
        """Keys + values of every slot of the padded batch."""
        return 2 * shape.batch * shape.kv_heads * shape.seq * shape.head_dim * elt
