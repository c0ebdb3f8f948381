"""``kivi`` — KIVI (Liu et al., 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache").

Rule: keys are quantised per channel, in groups of ``group_size`` consecutive tokens; values per
token, in groups of ``group_size`` channels (capped at head_dim). The most recent ``residual`` tokens
stay in full precision. At prefill everything but the last ``residual`` tokens is quantised, in
blocks aligned to the newest token; then every ``group_size`` generated tokens the oldest
``group_size`` of the residual are quantised, so it never exceeds ``residual + group_size`` tokens
(a prompt shorter than ``residual`` counts as padded to it, so a batch's padding changes nothing).
Codes are bit-packed; scales and zero-points are float16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import quant
from .base import QuantMethod, check_int, register


@register
@dataclass(frozen=True)
class KIVI(QuantMethod):
    name = "kivi"
    supported_bits = (2, 4)

    bits: int = field(default=2, metadata={"short": "b"})
    group_size: int = field(default=32, metadata={"short": "g"})
    residual: int = field(default=128, metadata={"short": "res"})

    def __post_init__(self):
        self.check_bits(self.bits)
        check_int(self.group_size, "group_size", 1)
        check_int(self.residual, "residual", 0)

    @property
    def block(self) -> int:
        """Tokens quantised together (keys are grouped along tokens)."""
        return self.group_size

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> quant.QTensor:
        """keys ``[b, kv_heads, n, head_dim]`` (n a multiple of group_size); valid ``[b, n]``."""
        return quant.quantize(keys, self.bits, axis=2, group_size=self.group_size, valid=valid[:, None, :, None])

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> quant.QTensor:
        d = values.shape[-1]
        g = self.group_size if d % self.group_size == 0 and self.group_size <= d else d
        return quant.quantize(values, self.bits, axis=3, group_size=g)

    def dequantize(self, packed: quant.QTensor, dtype: torch.dtype) -> torch.Tensor:
        return quant.dequantize(packed, dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """bits/8 bytes per code; fp16 (scale, zero) per group of ``group_size`` tokens (keys, per
        channel) and per group of channels (values)."""
        b, h, nq, d, g = batch, heads, tokens, head_dim, self.group_size
        gv = g if d % g == 0 and g <= d else d
        return (2 * b * h * nq * d * self.bits // 8 + 4 * b * h * d * math.ceil(nq / g)
                + 4 * b * h * nq * (d // gv))
