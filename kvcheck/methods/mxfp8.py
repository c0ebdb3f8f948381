"""``mxfp8`` — SGLang's ``--kv-cache-dtype mxfp8`` (FA4 backend): e4m3 codes in blocks of 32 channels,
each block with a UE8M0 (power-of-two) scale, keys and values alike.

Rule, per (token, head, block of 32 channels), in float32: ``e = ceil(log2(absmax / 448))`` (float32
``torch.log2`` of the float32 quotient, then ``ceil``: exact at powers of two), clamped to [−127, 127]
(the stored byte ``e + 127`` to [0, 254]; an all-zero block gets 2⁻¹²⁷); ``code = e4m3(clamp(x / 2^e,
−448, 448))``, rounded to nearest, ties to even; dequantised ``code · 2^e``. Dividing by a power of
two is exact, so the only rounding is the e4m3 one (and, where the float32 log2 of a quotient a few
ulps above a power of two rounds down onto it, a saturation of less than 2⁻¹⁶ of the entry). Bytes
per token per KV head, keys + values: 2·(head_dim + head_dim/32) (132 at head_dim 64, 264 at 128). A
head narrower than 32 channels is one block (the engine needs head_dim a multiple of 32; kvcheck's
small test heads need this); a wider head must be a multiple of 32.

The newest ``residual`` tokens can stay in full precision (the engine keeps none: ``residual=0``
mirrors it); each token is quantised as soon as it leaves the residual (blocks of one token).

The engine's writer is a GPU kernel (``mxfp8_quant_store_kv``); its source and call signature were
not read here (the rule above is the specification's), so no test compares with it, and how its log2
rounds just above a power of two (one exponent more or less there) is not verified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import formats
from ..errors import KvcheckError
from .base import QuantMethod, check_int, register

E_MIN, E_MAX = -formats.UE8M0_BIAS, 254 - formats.UE8M0_BIAS  # the stored byte in [0, 254]


def channel_group(name: str, block: int, head_dim: int) -> int:
    """Channels per scale: ``block``, or the whole head when it is narrower; otherwise ``block`` must
    divide head_dim."""
    g = min(block, head_dim)
    if head_dim % g:
        raise KvcheckError(f"{name}: head_dim {head_dim} is not a multiple of its {block}-channel scale block "
                           f"(the engine format needs one); use a model whose head_dim is a multiple of {block}.")
    return g


@dataclass
class MXFP8Tensor:
    """e4m3 codes ``[b, kv_heads, n, head_dim]`` and UE8M0 scale bytes ``[b, kv_heads, n, head_dim/32]``
    (``2^(byte − 127)``)."""

    fixed_point: ClassVar[bool] = True  # dq(q(y)) == y bit for bit for y = dq(q(x))
    # (a block whose largest code is 224 may be re-expressed at half the scale, same values)

    codes: torch.Tensor
    scale: torch.Tensor

    def nbytes(self) -> int:
        return self.codes.numel() + self.scale.numel()

    def cat(self, other: "MXFP8Tensor") -> "MXFP8Tensor":
        return MXFP8Tensor(torch.cat([self.codes, other.codes], dim=2), torch.cat([self.scale, other.scale], dim=2))

    def scale_per_entry(self) -> torch.Tensor:
        g = self.codes.shape[-1] // self.scale.shape[-1]
        return formats.pow2(self.scale.to(torch.int32) - formats.UE8M0_BIAS).repeat_interleave(g, dim=-1)

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``2^e·half_ulp_e4m3(|x|/2^e) + 2⁻¹⁶·|x|``: half an e4m3 ulp at the entry's binade under its
        block's scale (2⁻¹⁰·2^e in the subnormal range), and the saturation the float32 log2 may leave
        just above a power of two (``formats.LOG2_SLACK``, which also covers float32 rounding)."""
        s = self.scale_per_entry()
        xa = x.float().abs()
        return s * formats.half_ulp(xa / s, formats.E4M3_MANTISSA, formats.E4M3_MIN_EXP) + formats.LOG2_SLACK * xa


@register
@dataclass(frozen=True)
class MXFP8(QuantMethod):
    name = "mxfp8"
    engine = "SGLang --kv-cache-dtype mxfp8"
    block: ClassVar[int] = 1
    group_size: ClassVar[int] = 32  # channels per UE8M0 scale

    residual: int = field(default=0, metadata={"short": "res"})

    def __post_init__(self):
        check_int(self.residual, "residual", 0)

    def group(self, head_dim: int) -> int:
        return channel_group(self.name, self.group_size, head_dim)

    def quantize(self, x: torch.Tensor) -> MXFP8Tensor:
        g = self.group(x.shape[-1])
        xg = x.float().unflatten(-1, (-1, g))  # [b, h, n, d/g, g]
        amax = xg.abs().amax(dim=-1)
        e = formats.ceil_log2(amax / formats.E4M3_MAX).clamp_(E_MIN, E_MAX)
        codes = formats.to_e4m3(xg / formats.pow2(e).unsqueeze(-1)).flatten(-2)
        return MXFP8Tensor(codes, (e + formats.UE8M0_BIAS).to(torch.uint8))

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> MXFP8Tensor:
        """keys ``[b, kv_heads, n, head_dim]``; every block lies within one (token, head)."""
        return self.quantize(keys)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> MXFP8Tensor:
        return self.quantize(values)

    def dequantize(self, packed: MXFP8Tensor, dtype: torch.dtype) -> torch.Tensor:
        return formats.e4m3_to_float(packed.codes).mul_(packed.scale_per_entry()).to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim + head_dim/32 bytes per token, head and tensor (one scale byte per block)."""
        return 2 * batch * heads * tokens * (head_dim + head_dim // self.group(head_dim))
