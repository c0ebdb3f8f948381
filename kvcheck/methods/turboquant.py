"""``turboquant`` — vLLM 0.33's TurboQuant KV cache: Lloyd–Max keys, 3/4-bit values, boundary layers kept.

One method for the engine's four presets (``--kv-cache-dtype turboquant_<preset>``), chosen by the
``preset`` field: ``k8v4``, ``4bit_nc``, ``k3v4_nc`` or ``3bit_nc``.

Rule, per token and KV head (formats in :mod:`kvcheck.formats_turboquant`):

- Keys, ``k8v4``: the raw key cast to fp8 e4m3 with no scale (kvcheck clamps to ±448 first; how the
  engine's Triton cast overflows is not verified).
- Keys, the ``_nc`` presets (3 or 4 bits): ``n = ‖k‖`` (float32), ``y = (k / (n + 1e-8)) · H`` with
  ``H = Sylvester/√d`` (no random signs); each ``y_j`` gets the code of its Lloyd–Max bucket for
  N(0, 1/d) (``#{midpoints ≤ y_j}``, ties up); the codes are packed and ``fp16(n)`` stored.
  Dequantised: ``c = centroids[code]``, renormalised ``c ← c / √(Σc² + 1e-16)`` (NC), then
  ``k̂ = fp16(n) · (c · H)``.
- Values, every preset (b = 4, or 3 for ``3bit_nc``): ``scale = max((max − min)/(2^b − 1), 1e-8)``,
  ``q = clamp(int((v − min)/scale + 0.5), 0, 2^b − 1)`` (round half up, true division), stored with
  ``fp16(scale)`` and ``fp16(min)``; dequantised ``q · fp16(scale) + fp16(min)``. No rotation.
- The fp16 stores (norm, scale, min) saturate at ±65504 where the engine's cast would give ±inf.
- The first and last ``min(2, L // 2)`` layers of an L-layer model stay unquantised
  (:meth:`TurboQuant.quantizes_layer`; the engine's boundary skip for dense models).
- Prefill attends over the raw keys and values (kvcheck's quantised layer quantises after the
  forward, as the engine's first-chunk prefill does); then every token is quantised once its forward
  is done (block 1, residual 0). kvcheck's decode step attends over its own new token unquantised,
  where the engine stores the token before attending.

Bytes per token per KV head, keys and values together (the engine's ``slot_size_aligned``): key
``d`` (``k8v4``) or ``⌈bits·d/8⌉ + 2``, value ``⌈bits·d/8⌉ + 4``, rounded up to even. At head_dim
64 / 128: ``k8v4`` 100 / 196, ``4bit_nc`` 70 / 134, ``k3v4_nc`` 62 / 118, ``3bit_nc`` 54 / 102.
head_dim must be a power of two ≥ 8.

The engine's writer (Triton store kernel) runs only on GPU: the codes here follow its source and are
checked against it only by the GPU test (skipped without vLLM and CUDA); the centroid tables and the
rotation are the engine's own CPU-side functions, reproduced operation for operation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import formats_turboquant as tqf
from .. import quant
from ..errors import KvcheckError
from .base import QuantMethod, register
from .fp8 import e4m3_to_float

SLACK = quant.SLACK


class _Engine:
    """``engine``: on the class, every preset's setting; on an instance, its own preset's."""

    def __get__(self, obj, owner=None) -> str:
        if obj is None:
            return "vLLM --kv-cache-dtype turboquant_{" + ",".join(tqf.PRESETS) + "}"
        return f"vLLM --kv-cache-dtype turboquant_{obj.preset}"


@dataclass
class TQKeys:
    """Lloyd–Max key codes ``uint8 [b, kv_heads, n, ⌈bits·d/8⌉]`` and fp16 norms ``[b, kv_heads, n, 1]``."""

    codes: torch.Tensor
    norm: torch.Tensor
    bits: int
    head_dim: int

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.codes, self.norm))

    def cat(self, other: "TQKeys") -> "TQKeys":
        return TQKeys(torch.cat([self.codes, other.codes], 2), torch.cat([self.norm, other.norm], 2),
                      self.bits, self.head_dim)

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """The rule's own error on ``x``, recomputed in float64, plus what float32 may move.

        Let ``r = fp16(n)·(c′·H)`` be the rule applied to ``x`` in float64 (``c′`` the NC-renormalised
        centroids of the buckets of ``y = x/(n + 1e-8)·H``). The bound is ``|r − x|`` plus: one fp16 step
        of ``n`` (the float32 norm may round to the neighbouring fp16), ``n·d·2⁻²¹`` (float32 rounding of
        the rotation back), and, where a ``y_j`` lies within ``d·2⁻²¹`` of a midpoint (float32 may pick
        either bucket, a change Δ of ``c``), ``fp16(n)·(‖Δ‖₁/√d + |(c·H)_j|·‖Δ‖₂/‖c‖)/(‖c‖ − ‖Δ‖₂)``,
        at most ``2·fp16(n)``. It holds for any rule with this rotation, these tables and NC, and is
        exceeded by one with another rotation or table. The rotation here is built from its sign rule
        (:func:`sylvester`), not by the codec's construction."""
        return key_error_bound(x, self.bits)


@dataclass
class TQFp8Keys:
    """Raw e4m3 key codes ``[b, kv_heads, n, head_dim]``, no scale."""

    codes: torch.Tensor

    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size()

    def cat(self, other: "TQFp8Keys") -> "TQFp8Keys":
        return TQFp8Keys(torch.cat([self.codes, other.codes], 2))

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``2⁻⁴·|x| + 2⁻¹⁰ + max(|x| − 448, 0) + 2⁻²⁰·|x|``: half an e4m3 step (3 mantissa bits), half
        the subnormal step 2⁻⁹, the clamp at ±448, float32 rounding."""
        a = x.float().abs()
        return 2.0 ** -4 * a + 2.0 ** -10 + (a - tqf.E4M3_MAX).clamp_min(0) + SLACK * a


@dataclass
class TQValues:
    """Value codes ``uint8 [b, kv_heads, n, ⌈bits·d/8⌉]``, fp16 ``scale`` and ``zero`` ``[b, kv_heads, n, 1]``,
    and ``pad`` bytes per slot (the engine rounds each slot up to an even length)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    head_dim: int
    pad: int = 0

    def nbytes(self) -> int:
        held = sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.zero))
        return held + self.pad * self.scale.numel()

    def cat(self, other: "TQValues") -> "TQValues":
        return TQValues(torch.cat([self.codes, other.codes], 2), torch.cat([self.scale, other.scale], 2),
                        torch.cat([self.zero, other.zero], 2), self.bits, self.head_dim, self.pad)

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """From ``x`` alone: with ``s = max((max − min)/(2^b − 1), 1e-8)`` and ``m = min`` of each vector,
        ``s/2 + (2^b − 1)·e(s) + e(m)`` plus float32 rounding ``2⁻²⁰·(|x| + |m| + 2^b·s)``, where ``e(t)``
        is the most the fp16 store may move t (:func:`kvcheck.formats_turboquant.f16_error`)."""
        levels = (1 << self.bits) - 1
        xd = x.double()
        lo, hi = xd.amin(-1, keepdim=True), xd.amax(-1, keepdim=True)
        s = ((hi - lo) / levels).clamp_min(1e-8)
        bound = s / 2 + levels * tqf.f16_error(s) + tqf.f16_error(lo)
        bound = bound + SLACK * (xd.abs() + lo.abs() + (levels + 1) * s)
        return bound.float()


def sylvester(d: int, device=None) -> torch.Tensor:
    """``H_ij = (−1)^popcount(i & j) / √d`` in float64: the rotation, built apart from the codec's."""
    i = torch.arange(d, device=device)
    both = i[:, None] & i[None, :]
    parity = sum((both >> b) & 1 for b in range(max(d - 1, 1).bit_length())) % 2
    return (1 - 2 * parity).double() / d ** 0.5


def key_error_bound(x: torch.Tensor, bits: int) -> torch.Tensor:
    """:meth:`TQKeys.error_bound` for keys ``x [..., d]`` coded with ``bits``-bit centroids."""
    d = x.shape[-1]
    h = sylvester(d, x.device)
    table = tqf.centroids(d, bits).double().to(x.device)
    edges = tqf.midpoints(tqf.centroids(d, bits)).double().to(x.device)
    xd = x.double()
    n = xd.norm(dim=-1, keepdim=True)
    y = xd / (n + tqf.NORM_EPS) @ h
    delta = d * 2.0 ** -21
    c = table[tqf.bucketize(y, edges)]
    gap = table[tqf.bucketize(y + delta, edges)] - table[tqf.bucketize(y - delta, edges)]
    cn = ((c * c).sum(-1, keepdim=True) + tqf.NC_EPS).sqrt()
    ch = c @ h
    stored = tqf.to_f16(n).double()
    bound = (stored * ch / cn - xd).abs()
    bound = bound + 2 * tqf.f16_error(n) + n * d * 2.0 ** -21
    g1, g2 = gap.sum(-1, keepdim=True), gap.norm(dim=-1, keepdim=True)
    far = (cn - g2).clamp_min(1e-300)
    moved = stored * (g1 / d ** 0.5 + ch.abs() * g2 / cn) / far
    bound = bound + torch.where(g2 > 0, torch.minimum(moved, 2 * stored), torch.zeros_like(moved))
    return (bound * (1 + 2.0 ** -20) + SLACK * xd.abs()).float()


@register
@dataclass(frozen=True)
class TurboQuant(QuantMethod):
    name = "turboquant"
    engine = _Engine()
    supported_bits = (3, 4, 8)
    block: ClassVar[int] = 1
    residual: ClassVar[int] = 0  # the engine keeps no full-precision window

    preset: str = field(default="k8v4", metadata={"short": "p"})

    def __post_init__(self):
        if self.preset not in tqf.PRESETS:
            raise KvcheckError(f"turboquant: preset must be one of {', '.join(tqf.PRESETS)} (vLLM's "
                               f"turboquant_<preset>), got {self.preset!r}.")

    @property
    def key_bits(self) -> int:
        return tqf.PRESETS[self.preset][0]

    @property
    def value_bits(self) -> int:
        return tqf.PRESETS[self.preset][1]

    def quantizes_layer(self, layer_idx: int, n_layers: int) -> bool:
        """False for the first and last ``min(2, n_layers // 2)`` layers (kept at full precision)."""
        skip = min(2, n_layers // 2)
        return skip <= layer_idx < n_layers - skip

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> TQKeys | TQFp8Keys:
        """keys ``[b, kv_heads, n, d]``; every vector is coded on its own (``valid`` is not needed)."""
        d = keys.shape[-1]
        tqf.check_head_dim(d)
        if self.key_bits == 8:
            return TQFp8Keys(keys.float().clamp(-tqf.E4M3_MAX, tqf.E4M3_MAX).to(torch.float8_e4m3fn))
        k = keys.float()
        n = k.norm(dim=-1, keepdim=True)
        y = (k / (n + tqf.NORM_EPS)) @ tqf.hadamard(d, k.device)
        edges = tqf.midpoints(tqf.centroids(d, self.key_bits)).to(k.device)
        codes = tqf.bucketize(y, edges)
        return TQKeys(tqf.pack(codes, self.key_bits), tqf.to_f16(n), self.key_bits, d)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> TQValues:
        d = values.shape[-1]
        tqf.check_head_dim(d)
        bits, levels = self.value_bits, (1 << self.value_bits) - 1
        v = values.float()
        lo, hi = v.amin(-1, keepdim=True), v.amax(-1, keepdim=True)
        scale = (hi - lo) / levels
        scale = torch.where(scale > 1e-8, scale, torch.full_like(scale, 1e-8))
        codes = ((v - lo) / scale + 0.5).to(torch.int32).clamp_(0, levels)
        pad = tqf.slot_bytes(d, self.preset) - tqf.key_bytes(d, self.key_bits) - tqf.value_bytes(d, bits)
        return TQValues(tqf.pack(codes, bits), tqf.to_f16(scale), tqf.to_f16(lo), bits, d, pad)

    def dequantize(self, packed, dtype: torch.dtype) -> torch.Tensor:
        if isinstance(packed, TQFp8Keys):
            return e4m3_to_float(packed.codes).to(dtype)
        if isinstance(packed, TQValues):
            q = tqf.unpack(packed.codes, packed.bits).float()
            return (q * packed.scale.float() + packed.zero.float()).to(dtype)
        d = packed.head_dim
        table = tqf.centroids(d, packed.bits).to(packed.codes.device)
        c = table[tqf.unpack(packed.codes, packed.bits)]
        c = c / torch.sqrt((c * c).sum(-1, keepdim=True) + tqf.NC_EPS)
        return (packed.norm.float() * (c @ tqf.hadamard(d, c.device))).to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """The engine's slot per token and KV head (keys + values, even length)."""
        return batch * heads * tokens * tqf.slot_bytes(head_dim, self.preset)
