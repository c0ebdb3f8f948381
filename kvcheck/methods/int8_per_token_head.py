"""``int8_per_token_head`` — vLLM's ``--kv-cache-dtype int8_per_token_head``: symmetric int8 codes with
one float32 scale per token and KV head (keys and values each), as vLLM 0.33's Triton writer
computes them (TRITON_ATTN backend only).

Rule, per (token, head), in float32: ``scale = max(absmax / 127, 1e-6)``; ``y = x · (1 / scale)`` (a
reciprocal multiply, not a division); ``code = clamp(round_half_away(y), −128, 127)`` where
``round_half_away`` is ``trunc(y ± 0.5)`` (ties away from zero: 2.5 → 3, −0.5 → −1; vLLM's own
pure-torch reference uses ``torch.round``, ties to even, which differs on exact ties); dequantised
``code · scale``. Bytes per token per KV head, keys + values: 2·(head_dim + 4), the float32 scale
stored inline after each head's codes (136 at head_dim 64, 264 at 128).

The newest ``residual`` tokens can stay in full precision (the engine keeps none: ``residual=0``
mirrors it); each token is quantised as soon as it leaves the residual (blocks of one token).

The engine's writer is a Triton kernel and runs only on a GPU: the CPU tests pin this rule (the spec's
golden vectors, ties included) and the ``gpu``-marked test compares with the kernel where vLLM is
installed. Not verified here: whether Triton's float32 divisions (``absmax / 127``, ``1 / scale``) are
correctly rounded on the GPU; an approximate division could move a code that sits within a float32
ulp of a tie.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import formats
from ..quant import SLACK
from .base import QuantMethod, check_int, register

QMAX = 127.0
MIN_SCALE = 1e-6  # the kernel's floor (a float32 constant there as here)


@dataclass
class Int8PerTokenHeadTensor:
    """int8 codes ``[b, kv_heads, n, head_dim]`` and float32 scales ``[b, kv_heads, n, 1]``."""

    fixed_point: ClassVar[bool] = True  # dq(q(y)) == y bit for bit for y = dq(q(x))
    # (y's absmax lands on the code 127 again, so the scale and codes are re-derived)

    codes: torch.Tensor
    scale: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale))

    def cat(self, other: "Int8PerTokenHeadTensor") -> "Int8PerTokenHeadTensor":
        return Int8PerTokenHeadTensor(torch.cat([self.codes, other.codes], dim=2),
                                      torch.cat([self.scale, other.scale], dim=2))

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``s/2 + 2⁻²⁰·(|x| + 128·s)``: half the step s (no entry clips: |y| ≤ 127 up to float32
        rounding), float32 rounding of ``1/s``, ``y ± 0.5`` and ``code·s``."""
        return self.scale / 2 + SLACK * (x.float().abs() + 128 * self.scale)


def quantize(x: torch.Tensor) -> Int8PerTokenHeadTensor:
    x = x.float()
    scale = (x.abs().amax(dim=-1, keepdim=True) / QMAX).clamp_min(MIN_SCALE)
    y = x * (1.0 / scale)
    return Int8PerTokenHeadTensor(formats.round_half_away(y).clamp_(-128, 127).to(torch.int8), scale)


@register
@dataclass(frozen=True)
class Int8PerTokenHead(QuantMethod):
    name = "int8_per_token_head"
    engine = "vLLM --kv-cache-dtype int8_per_token_head"
    block: ClassVar[int] = 1

    residual: int = field(default=0, metadata={"short": "res"})

    def __post_init__(self):
        check_int(self.residual, "residual", 0)

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> Int8PerTokenHeadTensor:
        """keys ``[b, kv_heads, n, head_dim]``; every (token, head) is its own group, so padding never
        touches a real token's scale."""
        return quantize(keys)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> Int8PerTokenHeadTensor:
        return quantize(values)

    def dequantize(self, packed: Int8PerTokenHeadTensor, dtype: torch.dtype) -> torch.Tensor:
        return packed.codes.float().mul_(packed.scale).to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim + 4 bytes per token, head and tensor."""
        return 2 * batch * heads * tokens * (head_dim + 4)
