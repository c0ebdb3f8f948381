"""``fp8_per_token_head`` — vLLM's ``--kv-cache-dtype fp8_per_token_head``: e4m3 codes with one float32
scale per token and KV head (keys and values each), as vLLM 0.33's Triton writer computes them
(TRITON_ATTN backend only).

Rule, per (token, head), in float32: ``scale = max(absmax / 448, 1e-6)``; ``y = x · (1 / scale)``;
``code = e4m3(clamp(y, −448, 448))``, rounded to nearest, ties to even; dequantised ``code · scale``.
(448 is ``FP8_MAX`` on CUDA; fnuz ROCm uses 224 and another fp8 type, not mirrored.) Bytes per token
per KV head, keys + values: 2·(head_dim + 4), the float32 scale stored inline after each head's codes
(136 at head_dim 64, 264 at 128). It differs from kvcheck's ``fp8`` in the scale: float32 with a 1e-6
floor here, float16 rounded up with a 2⁻²⁴ floor there.

The newest ``residual`` tokens can stay in full precision (the engine keeps none: ``residual=0``
mirrors it); each token is quantised as soon as it leaves the residual (blocks of one token).

The engine's writer is a Triton kernel and runs only on a GPU: the CPU tests pin this rule and the
``gpu``-marked test compares with the kernel where vLLM is installed. Not verified here: whether
Triton's float32 divisions are correctly rounded on the GPU (see ``int8_per_token_head``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import formats
from ..quant import SLACK
from .base import QuantMethod, check_int, register

MIN_SCALE = 1e-6  # the kernel's floor


@dataclass
class FP8PerTokenHeadTensor:
    """e4m3 codes ``[b, kv_heads, n, head_dim]`` and float32 scales ``[b, kv_heads, n, 1]``."""

    fixed_point: ClassVar[bool] = True  # dq(q(y)) == y bit for bit for y = dq(q(x))
    # (y's absmax lands on the code 448 again, so the scale and codes are re-derived)

    codes: torch.Tensor
    scale: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale))

    def cat(self, other: "FP8PerTokenHeadTensor") -> "FP8PerTokenHeadTensor":
        return FP8PerTokenHeadTensor(torch.cat([self.codes, other.codes], dim=2),
                                     torch.cat([self.scale, other.scale], dim=2))

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``s·half_ulp_e4m3(|x|/s) + 2⁻²⁰·|x|``: half an e4m3 ulp at the entry's binade (2⁻¹⁰·s in the
        subnormal range; nothing saturates but by float32 rounding), float32 rounding."""
        xa = x.float().abs()
        return self.scale * formats.half_ulp(xa / self.scale, formats.E4M3_MANTISSA, formats.E4M3_MIN_EXP) + SLACK * xa


def quantize(x: torch.Tensor) -> FP8PerTokenHeadTensor:
    x = x.float()
    scale = (x.abs().amax(dim=-1, keepdim=True) / formats.E4M3_MAX).clamp_min(MIN_SCALE)
    return FP8PerTokenHeadTensor(formats.to_e4m3(x * (1.0 / scale)), scale)


@register
@dataclass(frozen=True)
class FP8PerTokenHead(QuantMethod):
    name = "fp8_per_token_head"
    engine = "vLLM --kv-cache-dtype fp8_per_token_head"
    block: ClassVar[int] = 1

    residual: int = field(default=0, metadata={"short": "res"})

    def __post_init__(self):
        check_int(self.residual, "residual", 0)

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> FP8PerTokenHeadTensor:
        """keys ``[b, kv_heads, n, head_dim]``; every (token, head) is its own group."""
        return quantize(keys)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> FP8PerTokenHeadTensor:
        return quantize(values)

    def dequantize(self, packed: FP8PerTokenHeadTensor, dtype: torch.dtype) -> torch.Tensor:
        return formats.e4m3_to_float(packed.codes).mul_(packed.scale).to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim + 4 bytes per token, head and tensor."""
        return 2 * batch * heads * tokens * (head_dim + 4)
