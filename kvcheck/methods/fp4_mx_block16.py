"""``fp4_mx_block16`` — SGLang's ``--kv-cache-dtype fp4_mx_block16``: FP4 (e2m1) codes in blocks of 16
channels, each block with a UE8M0 (power-of-two) scale, keys and values alike.

Rule, per (token, head, block of 16 channels), in float32: ``e = ceil(log2(max(absmax / 6, 1e-10)))``
(float32 ``torch.log2``, then ``ceil``, as SGLang's helper: exact at powers of two; just above one it
may round down onto it, leaving a saturation under 2⁻¹⁶ of the entry), stored as the byte ``e + 127``;
``code = e2m1(x / 2^e)`` with ties rounded up: the magnitude index is the count of (0.25, 0.75, 1.25,
1.75, 2.5, 3.5, 5) at or below ``|x / 2^e|`` (so 2.5 → 3 and 5 → 6, where vLLM's NVFP4 rounds ties to
even), the sign bit ``x < 0``; two codes per byte, element 2i in the low nibble; dequantised
``value(code) · 2^e``. Bytes per token per KV head, keys + values: 2·(head_dim/2 + head_dim/16) (72 at
head_dim 64, 144 at 128). A head narrower than 16 channels is one block; a wider head must be a
multiple of 16.

The newest ``residual`` tokens can stay in full precision (the engine keeps none: ``residual=0``
mirrors it); each token is quantised as soon as it leaves the residual (blocks of one token).

The engine's writer is pure PyTorch (``FP4MXBlock16KVQuantizeUtil.batched_quantize``, under
``torch.compile``) and runs on a CPU: a test compares with it bit for bit on float32 input where
SGLang is installed. The helper computes in its input's dtype; kvcheck computes in float32, so for
bfloat16 input the two may differ where ``absmax / 6`` or its log2 rounds across a power of two
(not verified).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import formats
from .base import QuantMethod, check_int, register
from .mxfp8 import channel_group

TINY = 1e-10  # the floor of absmax / 6: an all-zero block gets e = −33


@dataclass
class FP4Block16Tensor:
    """Packed e2m1 codes ``uint8 [b, kv_heads, n, head_dim/2]`` and UE8M0 scale bytes ``[b, kv_heads,
    n, head_dim/16]`` (``2^(byte − 127)``)."""

    fixed_point: ClassVar[bool] = True  # dq(q(y)) == y bit for bit for y = dq(q(x))
    # (a block whose largest code is 3 or less may be re-expressed at a smaller scale, same values)

    codes: torch.Tensor
    scale: torch.Tensor

    def nbytes(self) -> int:
        return self.codes.numel() + self.scale.numel()

    def cat(self, other: "FP4Block16Tensor") -> "FP4Block16Tensor":
        return FP4Block16Tensor(torch.cat([self.codes, other.codes], dim=2),
                                torch.cat([self.scale, other.scale], dim=2))

    def scale_per_entry(self) -> torch.Tensor:
        g = 2 * self.codes.shape[-1] // self.scale.shape[-1]
        return formats.pow2(self.scale.to(torch.int32) - formats.UE8M0_BIAS).repeat_interleave(g, dim=-1)

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``2^e·half_ulp_e2m1(|x|/2^e) + 2⁻¹⁶·|x|``: half the e2m1 spacing at the entry's magnitude under
        its block's scale (0.25, 0.5 or 1 times 2^e; a tie, rounded up, sits exactly on it), and the
        saturation above 6 the float32 log2 may leave (``formats.LOG2_SLACK``, float32 rounding too)."""
        s = self.scale_per_entry()
        xa = x.float().abs()
        return s * formats.half_ulp(xa / s, formats.E2M1_MANTISSA, formats.E2M1_MIN_EXP) + formats.LOG2_SLACK * xa


@register
@dataclass(frozen=True)
class FP4MXBlock16(QuantMethod):
    name = "fp4_mx_block16"
    engine = "SGLang --kv-cache-dtype fp4_mx_block16"
    block: ClassVar[int] = 1
    group_size: ClassVar[int] = 16  # channels per UE8M0 scale

    residual: int = field(default=0, metadata={"short": "res"})

    def __post_init__(self):
        check_int(self.residual, "residual", 0)

    def group(self, head_dim: int) -> int:
        return channel_group(self.name, self.group_size, head_dim)

    def quantize(self, x: torch.Tensor) -> FP4Block16Tensor:
        g = self.group(x.shape[-1])
        xg = x.float().unflatten(-1, (-1, g))  # [b, h, n, d/g, g]
        amax = xg.abs().amax(dim=-1)
        e = formats.ceil_log2((amax / formats.E2M1_MAX).clamp_min(TINY))
        codes = formats.e2m1_encode(xg / formats.pow2(e).unsqueeze(-1)).flatten(-2)
        return FP4Block16Tensor(formats.pack_nibbles(codes), (e + formats.UE8M0_BIAS).to(torch.uint8))

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> FP4Block16Tensor:
        """keys ``[b, kv_heads, n, head_dim]`` (head_dim even); every block lies within one (token, head)."""
        return self.quantize(keys)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> FP4Block16Tensor:
        return self.quantize(values)

    def dequantize(self, packed: FP4Block16Tensor, dtype: torch.dtype) -> torch.Tensor:
        values = formats.e2m1_decode(formats.unpack_nibbles(packed.codes))
        return values.mul_(packed.scale_per_entry()).to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim/2 + head_dim/16 bytes per token, head and tensor (two codes a byte, one scale byte
        per block)."""
        return 2 * batch * heads * tokens * (head_dim // 2 + head_dim // self.group(head_dim))
