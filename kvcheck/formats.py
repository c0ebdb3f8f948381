"""Element and scale formats of the serving engines' KV caches: pure tensor functions shared by the
engine-format methods (``vllm_fp8``, ``int8_per_token_head``, ``fp8_per_token_head``, ``mxfp8``,
``fp4_mx_block16``).

- e4m3 (``torch.float8_e4m3fn``): 3 mantissa bits, normal exponents from −6, largest value 448;
  :func:`to_e4m3` saturates to ±448, then rounds to nearest, ties to even.
- e2m1 (FP4): the magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6} and a sign bit (code = sign·8 + index);
  :func:`e2m1_encode` takes the index as the count of :data:`E2M1_BOUNDS` at or below ``|v|``, so ties
  round up (away from zero). Two codes share a byte, element 2i in the low nibble.
- UE8M0 scales: a power of two 2^e stored as the byte e + 127, e from :func:`ceil_log2` (float32
  ``torch.log2``, then ``ceil``, as the engines' code writes it).
- :func:`round_half_away`: ``trunc(y + 0.5)`` for y ≥ 0, ``trunc(y − 0.5)`` otherwise, the sum rounded
  to float32 first, as the engines' integer writers compute it.

Every function reads and returns float32 (or the integer codes), and rounds nowhere but where stated.
"""
from __future__ import annotations

import functools

import torch

E4M3_MAX = 448.0
E4M3_MANTISSA, E4M3_MIN_EXP = 3, -6  # normal exponents from -6; below, subnormal spacing 2^-9
E2M1_MAX = 6.0
E2M1_MANTISSA, E2M1_MIN_EXP = 1, 0  # spacing 0.5 below 2, 1 in [2, 4), 2 in [4, 6]
E2M1_BOUNDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)  # |v| at or above the k-th bound has index > k
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
UE8M0_BIAS = 127
LOG2_SLACK = 2.0 ** -16  # relative saturation a power-of-two scale may leave (float32 log2, see ceil_log2)

__all__ = ["E2M1_BOUNDS", "E2M1_MAX", "E2M1_VALUES", "E4M3_MAX", "LOG2_SLACK", "UE8M0_BIAS", "ceil_log2",
           "e2m1_decode", "e2m1_encode", "e4m3_to_float", "half_ulp", "pack_nibbles", "pow2", "round_half_away",
           "to_e4m3", "unpack_nibbles"]


def round_half_away(y: torch.Tensor) -> torch.Tensor:
    """float32 ``y`` rounded to the nearest integer, ties away from zero (``y ± 0.5`` in float32, then
    truncated), as a float32 tensor."""
    return torch.where(y >= 0, y + 0.5, y - 0.5).trunc_()


def to_e4m3(y: torch.Tensor) -> torch.Tensor:
    """float32 → ``float8_e4m3fn``: saturate to ±448, then round to nearest, ties to even."""
    return y.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


@functools.lru_cache(maxsize=None)
def _e4m3_table(device: torch.device) -> torch.Tensor:
    return torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().to(device)


def e4m3_to_float(codes: torch.Tensor) -> torch.Tensor:
    """``float8_e4m3fn`` codes → float32, by table lookup (the same values as ``codes.float()``)."""
    table = _e4m3_table(codes.device)
    return table.index_select(0, codes.view(torch.uint8).reshape(-1).long()).view(codes.shape)


def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """float32 → e2m1 codes (``uint8`` 0..15): sign·8 + #(E2M1_BOUNDS ≤ |v|), so a tie rounds up and
    anything from 5 up (6 and beyond included) becomes 6."""
    bounds = torch.tensor(E2M1_BOUNDS, dtype=torch.float32, device=v.device)
    index = (v.abs().unsqueeze(-1) >= bounds).sum(dim=-1, dtype=torch.uint8)
    return index | ((v < 0).to(torch.uint8) << 3)


@functools.lru_cache(maxsize=None)
def _e2m1_table(device: torch.device) -> torch.Tensor:
    values = torch.tensor(E2M1_VALUES, dtype=torch.float32)
    return torch.cat([values, -values]).to(device)


def e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """e2m1 codes (``uint8`` 0..15) → float32 (code 8 is −0)."""
    table = _e2m1_table(codes.device)
    return table.index_select(0, codes.reshape(-1).long()).view(codes.shape)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """``uint8`` codes 0..15 ``[..., 2k]`` → bytes ``[..., k]``: element 2i low nibble, 2i+1 high."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: bytes ``[..., k]`` → codes ``[..., 2k]``."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).flatten(-2)


def ceil_log2(v: torch.Tensor) -> torch.Tensor:
    """``ceil(log2(v))`` of float32 ``v`` as the engines' code writes it: float32 ``torch.log2``, then
    ``ceil``, as int32 (v = 0 gives −2³¹, below any clamp). Exact at every power of two; for ``v``
    a few ulps above one, the float32 log2 rounds down onto the integer (by less than 2⁻¹⁷ of v), so
    the block's absmax then sits that little above the element maximum and saturates."""
    e = torch.log2(v).ceil_()
    return e.clamp_min(-(2.0 ** 31)).to(torch.int32)


def pow2(e: torch.Tensor) -> torch.Tensor:
    """``2^e`` as float32, exactly, for integer ``e`` in [−149, 127] (subnormal powers included), built
    from its bits."""
    e = e.to(torch.int32)
    normal = (e + 127).clamp_min(0) << 23
    subnormal = torch.ones_like(e) << (e + 149).clamp(0, 22)
    return torch.where(e >= -126, normal, subnormal).view(torch.float32)


def half_ulp(v: torch.Tensor, mantissa_bits: int, min_exp: int) -> torch.Tensor:
    """Half the spacing of a float grid (``mantissa_bits``, normal exponents from ``min_exp``) around
    ``|v|``: ``2^(max(floor(log2|v|), min_exp) − mantissa_bits − 1)``, the largest rounding error of a
    value in ``|v|``'s binade."""
    _, p = torch.frexp(v.abs())
    e = torch.where(v != 0, p - 1, torch.full_like(p, min_exp)).clamp_min(min_exp)
    return pow2(e - mantissa_bits - 1)
