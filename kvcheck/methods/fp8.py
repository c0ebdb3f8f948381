"""``fp8`` — FP8 (e4m3) KV cache with per-token, per-head scales, as in vLLM's and TensorRT-LLM's
fp8 KV caches.

Rule: for every token and KV head, scale = absmax / 448 (448 = the largest e4m3 value), stored as
float16 rounded up so no code overflows; codes = x / scale cast to ``torch.float8_e4m3fn`` (one byte
each). Bytes per token, head and tensor: head_dim + 2. The newest ``residual`` tokens stay in full
precision; each token is quantised as soon as it leaves the residual (blocks of one token).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import quant
from .base import QuantMethod, check_int, register

E4M3_MAX = 448.0
MIN_SCALE = 2.0 ** -24  # smallest positive float16: an all-zero vector still gets a usable scale


@dataclass
class FP8Tensor:
    """e4m3 codes ``[b, kv_heads, n, head_dim]`` and float16 scales ``[b, kv_heads, n, 1]``."""

    codes: torch.Tensor
    scale: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale))

    def cat(self, other: "FP8Tensor") -> "FP8Tensor":
        """Append ``other`` along the token axis (what ``quant.cat`` calls)."""
        return FP8Tensor(torch.cat([self.codes, other.codes], dim=2), torch.cat([self.scale, other.scale], dim=2))

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``2⁻⁴·|x| + 2⁻¹⁰·s + 2⁻²⁰·|x|`` (e4m3 has 3 mantissa bits, per-token scale s): half an e4m3
        ulp of x/s, half the subnormal spacing 2⁻⁹, float32 rounding."""
        return 2.0 ** -4 * x.abs() + 2.0 ** -10 * self.scale.float() + quant.SLACK * x.abs()


@register
@dataclass(frozen=True)
class FP8(QuantMethod):
    name = "fp8"
    block: ClassVar[int] = 1

    residual: int = field(default=0, metadata={"short": "res"})

    def __post_init__(self):
        check_int(self.residual, "residual", 0)

    def quantize(self, x: torch.Tensor) -> FP8Tensor:
        x = x.float()
        step = (x.abs().amax(dim=-1, keepdim=True) / E4M3_MAX).clamp_min(MIN_SCALE)
        scale = step.to(quant.SCALE_DTYPE)
        scale = torch.where(scale.float() < step, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
        codes = (x / scale.float()).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        return FP8Tensor(codes, scale)

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> FP8Tensor:
        return self.quantize(keys)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> FP8Tensor:
        return self.quantize(values)

    def dequantize(self, packed: FP8Tensor, dtype: torch.dtype) -> torch.Tensor:
        return e4m3_to_float(packed.codes).mul_(packed.scale.float()).to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim + 2 bytes per token, head and tensor."""
        return 2 * batch * heads * tokens * (head_dim + 2)


@functools.lru_cache(maxsize=None)
def _e4m3_table(device: torch.device) -> torch.Tensor:
    """The float32 value of each of the 256 e4m3 bit patterns."""
    return torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().to(device)


def e4m3_to_float(codes: torch.Tensor) -> torch.Tensor:
    """``codes.float()`` by table lookup: the same values, several times faster on CPU, where the cast
    converts element by element."""
    if codes.device.type != "cpu":
        return codes.float()
    table = _e4m3_table(codes.device)
    return table.index_select(0, codes.view(torch.uint8).reshape(-1).long()).view(codes.shape)
