"""``int`` — per-token asymmetric integer quantisation (int8 / int4) of keys and values, the plain
baseline that KIVI and FP8 are compared with.

Rule: every token's key and value vectors are cut, per KV head, into groups of ``group_size``
channels (one group per head when ``group_size`` ≥ head_dim; otherwise it must divide head_dim); each
group stores ``bits``-bit codes and a float16 (scale, zero) pair. Bytes per token, head and tensor:
head_dim × bits / 8 + 4 × head_dim / group_size. The newest ``residual`` tokens stay in full precision;
each token is quantised as soon as it leaves the residual (blocks of one token).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import quant
from ..errors import KvcheckError
from .base import QuantMethod, check_int, register


@register
@dataclass(frozen=True)
class IntQuant(QuantMethod):
    name = "int"
    supported_bits = (4, 8)
    block: ClassVar[int] = 1  # tokens quantised together (groups run along channels)

    bits: int = field(default=8, metadata={"short": "b"})
    group_size: int = field(default=32, metadata={"short": "g"})
    residual: int = field(default=0, metadata={"short": "res"})

    def __post_init__(self):
        self.check_bits(self.bits)
        check_int(self.group_size, "group_size", 1)
        check_int(self.residual, "residual", 0)

    def group(self, head_dim: int) -> int:
        g = min(self.group_size, head_dim)
        if head_dim % g:
            raise KvcheckError(f"int: group_size {self.group_size} does not divide head_dim {head_dim}; "
                               f"use a divisor of {head_dim} (or >= {head_dim} for one group per head).")
        return g

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> quant.QTensor:
        """keys ``[b, kv_heads, n, head_dim]``; every token is its own set of groups, so padding
        never widens a real token's range."""
        return quant.quantize(keys, self.bits, axis=3, group_size=self.group(keys.shape[-1]))

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> quant.QTensor:
        return quant.quantize(values, self.bits, axis=3, group_size=self.group(values.shape[-1]))

    def dequantize(self, packed: quant.QTensor, dtype: torch.dtype) -> torch.Tensor:
        return quant.dequantize(packed, dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim × bits/8 + 4 × head_dim/group per token, head and tensor."""
        d = head_dim
        return 2 * batch * heads * tokens * (d * self.bits // 8 + 4 * d // min(self.group_size, d))
