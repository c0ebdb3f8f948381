"""``int4_per_token_head`` — vLLM 0.33's ``--kv-cache-dtype int4_per_token_head`` (TRITON_ATTN backend,
``vllm/v1/attention/ops/int4_per_token_head.py``): a randomized Hadamard transform, then asymmetric
uint4 codes per (token, KV head), keys and values alike.

Rule, per token and KV head, on the ``d`` channels ``x``:

1. Rotate: ``x' = rht(x.float())`` rounded to ``x``'s dtype (the engine's
   ``single_rht(key.float()).to(key.dtype)``): ``H_b·(x ∘ s)`` block-diagonally over blocks of ``b`` =
   the largest power of two dividing d, ``H_b`` the unnormalised Sylvester matrix, ``s`` the engine's
   seeded ±1 vector (:mod:`kvcheck.formats_fp4`).
2. ``scale = max((max x' − min x')/15, 1e-6)``, ``zp = clamp(rha(−min x'/scale), 0, 15)``,
   ``q = clamp(rha(x'·(1/scale) + zp), 0, 15)``, rha = round half away from zero, all in float32.
3. Store the codes two per byte (element 2i in the low nibble) and one float32 whose bits are
   ``(bits(scale) & ~0xF) | zp``: the zero-point hides in the scale's four lowest mantissa bits.
4. Dequantise: ``x̂' = (q − zp)·f32(bits & ~0xF)``, then ``x̂ = (H_b·x̂') ∘ s / b`` (the engine rotates
   the query and the attention output instead, the same product since ``H_b/√b`` is orthogonal).

Bytes per token per KV head, keys and values together: ``2·(d/2 + 4)`` (72 at d = 64, 136 at 128),
the engine's page layout (``TritonAttentionBackend.customize_spec``).

The zero-point is clamped, so a head whose rotated vector is all positive (or all negative) clips;
a vector supported on the first channel of each Hadamard block rotates to a constant one, whose
scale is the 1e-6 floor, and comes back as almost nothing. :meth:`Int4HeadTensor.error_bound` states
the clipping, it does not hide it.

Checked here against the engine's source and pure-PyTorch parts (the sign vector, the butterfly, the
formulas). The engine's writer is a Triton kernel and runs on GPU only; on CUDA its transform is
``hadacore`` in bf16 and its divisions are Triton's, so byte-exact codes against the engine need a
GPU run (``tests/test_engine_formats_fp4_int4.py``'s ``gpu`` tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import formats_fp4 as f4
from .. import quant
from ..errors import KvcheckError
from .base import QuantMethod, check_int, register

MIN_SCALE = 1e-6
LEVELS = 15
SLACK = 2.0 ** -20  # float32 rounding of the transforms, relative to the magnitudes summed


def quantize_rotated(xr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's per-(token, head) uint4 quantiser on rotated vectors ``xr`` ``[..., d]`` (float32):
    → (codes ``uint8 [..., d]`` in [0, 15], stored scale ``float32 [..., 1]`` with zp in its low bits)."""
    lo = xr.amin(dim=-1, keepdim=True)
    hi = xr.amax(dim=-1, keepdim=True)
    scale = ((hi - lo) / LEVELS).clamp_min(MIN_SCALE)
    zp = f4.round_half_away(-lo / scale).clamp(0, LEVELS)
    q = f4.round_half_away(xr * (1.0 / scale) + zp).clamp(0, LEVELS)
    bits = (scale.view(torch.int32) & -16) | zp.to(torch.int32)
    return q.to(torch.uint8), bits.view(torch.float32)


def split_scale(stored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored float32 → (step ``f32(bits & ~0xF)``, zero-point ``bits & 0xF`` as float32)."""
    bits = stored.view(torch.int32)
    return (bits & -16).view(torch.float32), (bits & 0xF).to(torch.float32)


@dataclass
class Int4HeadTensor:
    """Codes ``uint8 [b, kv_heads, n, head_dim/2]`` (two per byte) and the stored scales ``float32
    [b, kv_heads, n, 1]`` (zero-point in the low four bits)."""

    codes: torch.Tensor
    scale: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale))

    def cat(self, other: "Int4HeadTensor") -> "Int4HeadTensor":
        """Append ``other`` along the token axis (what ``quant.cat`` calls)."""
        return Int4HeadTensor(torch.cat([self.codes, other.codes], dim=2), torch.cat([self.scale, other.scale], dim=2))

    def rotated(self) -> torch.Tensor:
        """The dequantised rotated vectors ``x̂' = (q − zp)·step``, float32 ``[..., head_dim]``."""
        step, zp = split_scale(self.scale)
        return (quant.unpack_float(self.codes, 4) - zp) * step

    def exact_requantization(self) -> torch.Tensor:
        """Where ``dq(q(y)) == y`` holds bit for bit for the output ``y`` of this tensor: nowhere (bool
        ``[..., head_dim]``, all False). y rotates back onto the stored grid only up to float32 rounding
        of the two transforms, and its outermost codes need not be 0 and 15, so the re-derived scale
        differs; what holds is ``|dq(q(y)) − y| ≤`` the bound stated for y."""
        return torch.zeros(*self.codes.shape[:-1], 2 * self.codes.shape[-1], dtype=torch.bool,
                           device=self.codes.device)

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Per entry of ``x`` (the tensor packed), in the original domain.

        In the rotated domain, entry j of a head (x'_j as quantised, step and zp as stored) is off by
        at most ``e'_j = max(step/2, x'_j − (15 − zp)·step, −zp·step − x'_j) + 2⁻¹⁴·step``: half a step
        where x'_j rounds to a code, its distance to the nearest end of the representable range
        ``[−zp·step, (15 − zp)·step]`` where it clips to code 0 or 15 (the 2⁻¹⁴ covers the quantiser's
        scale, which exceeds the stored one by under 2⁻¹⁹ of it, and float32 rounding of
        x'·(1/scale) + zp); plus ``|x'_j − rht(x)_j|``, the rounding of the rotated vector to x's dtype.

        Back in the original domain ``x̂ − x = (H_b·(x̂' − x')) ∘ s / b``, and every entry of ``H_b`` is
        ±1, so entry i is off by at most ``(1/b)·Σ_j e'_j`` over its block (the normalised
        ``H_b/√b`` is orthogonal, so the same error has the L2 norm ``‖e'‖₂/√b`` ≥ that mean: the
        per-entry bound is the block's mean rotated bound, never its max). Plus float32 rounding of
        both transforms, ``2⁻²⁰·(Σ_j |x_j| + Σ_j |x̂'_j|/b)`` over the block.
        """
        xf = x.float()
        exact = f4.rht(xf)
        xr = exact.to(x.dtype).float()
        step, zp = split_scale(self.scale)
        above = xr - (LEVELS - zp) * step
        below = -zp * step - xr
        rotated = (torch.maximum(torch.maximum(above, below), step / 2) + step * 2.0 ** -14
                   + (xr - exact).abs())
        b = f4.hadamard_block(x.shape[-1])
        blocks = (*x.shape[:-1], x.shape[-1] // b, b)
        mean = rotated.reshape(blocks).mean(dim=-1, keepdim=True)
        total = xf.abs().reshape(blocks).sum(dim=-1, keepdim=True) + self.rotated().abs().reshape(blocks).mean(
            dim=-1, keepdim=True)
        return (mean + SLACK * total).expand(blocks).reshape(x.shape)


@register
@dataclass(frozen=True)
class Int4PerTokenHead(QuantMethod):
    name = "int4_per_token_head"
    engine = "vLLM --kv-cache-dtype int4_per_token_head"
    block: ClassVar[int] = 1
    head_dim_multiple: ClassVar[int] = 2  # two codes per byte

    residual: int = field(default=0, metadata={"short": "res"})

    def __post_init__(self):
        check_int(self.residual, "residual", 0)

    def quantize(self, x: torch.Tensor) -> Int4HeadTensor:
        """``x`` ``[b, kv_heads, n, head_dim]`` → codes and stored scales, every token on its own."""
        d = x.shape[-1]
        if d % self.head_dim_multiple:
            raise KvcheckError(f"{self.name}: head_dim must be even (two 4-bit codes per byte), got {d}.")
        xr = f4.rht(x.float()).to(x.dtype).float()
        codes, scale = quantize_rotated(xr)
        return Int4HeadTensor(quant.pack(codes, 4), scale)

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> Int4HeadTensor:
        return self.quantize(keys)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> Int4HeadTensor:
        return self.quantize(values)

    def dequantize(self, packed: Int4HeadTensor, dtype: torch.dtype) -> torch.Tensor:
        x = packed.rotated()
        return (f4.rht(x, inverse=True) / f4.hadamard_block(x.shape[-1])).to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim/2 bytes of codes + one float32 per token, head and tensor."""
        return 2 * batch * heads * tokens * (head_dim // 2 + 4)
