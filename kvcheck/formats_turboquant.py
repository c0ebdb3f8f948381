"""TurboQuant's storage formats, as vLLM 0.33 writes them for ``--kv-cache-dtype turboquant_*``: pure
tensor functions (no state but cached tables), used by :mod:`kvcheck.methods.turboquant`.

- :func:`centroids` — the Lloyd–Max centroids for N(0, 1/d) that the engine computes at start-up
  (``solve_lloyd_max``: start uniform on ±3.5σ, outer edges ±10.5σ, trapezoid integrals with 200
  intervals, at most 200 iterations, stop when no centroid moves by 1e-10; float64 arithmetic, then
  float32). :func:`midpoints` are the float32 averages of neighbours, the store's decision edges.
- :func:`hadamard` — the rotation ``H = Sylvester(d)/√d`` in float32: orthonormal and symmetric
  (``H·H = I``), with no random sign vector (every sign is ``(−1)^popcount(i & j)``), shared by all
  layers. d must be a power of two.
- :func:`bucketize` — code of each rotated coordinate: ``#{m ∈ midpoints : y ≥ m}`` (ties go up).
- :func:`pack` / :func:`unpack` — 4-bit: byte i = ``q[2i] | q[2i+1] << 4``; 3-bit: every 8 codes form
  the 24-bit little-endian word ``Σ q[8g+j] << 3j``, stored as 3 bytes.
- :func:`to_f16` and :func:`f16_error` — the float16 stores (key norm, value scale and minimum) and
  how far they may sit from the float32 value stored.
- :data:`PRESETS` and :func:`slot_bytes` — the four presets and the engine's slot arithmetic
  (``TurboQuantConfig``): key ``d`` bytes (fp8) or ``⌈bits·d/8⌉ + 2`` (codes + fp16 norm), value
  ``⌈bits·d/8⌉ + 4`` (codes + fp16 scale + fp16 zero), the slot rounded up to an even length.
"""
from __future__ import annotations

import functools
import math

import torch

from .errors import KvcheckError

# preset → (key bits, value bits, norm correction); key bits 8 = raw fp8 (e4m3) keys
PRESETS: dict[str, tuple[int, int, bool]] = {
    "k8v4": (8, 4, False),
    "4bit_nc": (4, 4, True),
    "k3v4_nc": (3, 4, True),
    "3bit_nc": (3, 3, True),
}
F16_MAX = 65504.0
E4M3_MAX = 448.0
NC_EPS = 1e-16  # inside the norm-correction square root
NORM_EPS = 1e-8  # added to the key norm before dividing


def check_head_dim(d: int) -> None:
    """The Sylvester rotation and the 3-bit groups of 8 need a power of two ≥ 8."""
    if d < 8 or d & (d - 1):
        raise KvcheckError(f"turboquant: head_dim must be a power of two >= 8 (the engine's Sylvester "
                           f"Hadamard rotation and 3-bit groups of 8 codes), got {d}.")


def _gauss_pdf(x: float, var: float) -> float:
    return (1.0 / math.sqrt(2 * math.pi * var)) * math.exp(-x * x / (2 * var))


def _trapezoid(f, a: float, b: float, n: int = 200) -> float:
    h = (b - a) / n
    total = 0.5 * (f(a) + f(b))
    for i in range(1, n):
        total += f(a + i * h)
    return total * h


@functools.lru_cache(maxsize=None)
def _lloyd_max(d: int, bits: int) -> tuple[float, ...]:
    """The engine's Lloyd–Max iteration, in the same float64 operations and order."""
    levels = 2 ** bits
    var = 1.0 / d
    sigma = math.sqrt(var)

    def pdf(x):
        return _gauss_pdf(x, var)

    def first_moment(x):
        return x * pdf(x)

    lo, hi = -3.5 * sigma, 3.5 * sigma
    c = [lo + (hi - lo) * (i + 0.5) / levels for i in range(levels)]
    for _ in range(200):
        edges = [lo * 3] + [(c[i] + c[i + 1]) / 2.0 for i in range(levels - 1)] + [hi * 3]
        new = []
        for i in range(levels):
            num = _trapezoid(first_moment, edges[i], edges[i + 1])
            den = _trapezoid(pdf, edges[i], edges[i + 1])
            new.append(num / den if den > 1e-15 else c[i])
        if max(abs(new[i] - c[i]) for i in range(levels)) < 1e-10:
            break  # the engine keeps the previous iterate
        c = new
    return tuple(c)


@functools.lru_cache(maxsize=None)
def _centroids(d: int, bits: int) -> torch.Tensor:
    return torch.tensor(_lloyd_max(d, bits), dtype=torch.float32)


def centroids(d: int, bits: int) -> torch.Tensor:
    """The ``2**bits`` sorted Lloyd–Max centroids for N(0, 1/d), float32 (a fresh copy)."""
    return _centroids(d, bits).clone()


def midpoints(table: torch.Tensor) -> torch.Tensor:
    """Decision edges of a sorted float32 table: ``(c[:-1] + c[1:]) / 2`` in float32."""
    return (table[:-1] + table[1:]) / 2


@functools.lru_cache(maxsize=None)
def _hadamard(d: int) -> torch.Tensor:
    if d < 1 or d & (d - 1):
        raise KvcheckError(f"turboquant: the Sylvester Hadamard rotation needs a power of two, got {d}.")
    h = torch.tensor([[1.0]])
    while h.shape[0] < d:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(d)


def hadamard(d: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``Sylvester(d)/√d`` ``[d, d]`` float32, built as the engine builds it (a fresh copy)."""
    return _hadamard(d).to(device, copy=True)


def bucketize(y: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``#{m ∈ edges : y ≥ m}`` per entry (int64): a value on an edge goes to the upper bucket."""
    return torch.searchsorted(edges.to(y.dtype), y.contiguous(), right=True)


def code_bytes(d: int, bits: int) -> int:
    """Bytes of ``d`` codes of ``bits`` bits: ``⌈bits·d/8⌉``."""
    return math.ceil(d * bits / 8)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``[..., d]`` in ``[0, 2**bits)`` → ``uint8 [..., ⌈bits·d/8⌉]`` in the engine's byte order."""
    c = codes.to(torch.int32)
    if bits == 4:
        pairs = c.unflatten(-1, (-1, 2))
        return (pairs[..., 0] | (pairs[..., 1] << 4)).to(torch.uint8)
    if bits == 3:
        groups = c.unflatten(-1, (-1, 8))
        word = (groups << (3 * torch.arange(8, dtype=torch.int32, device=c.device))).sum(-1)
        return torch.stack([word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFF], -1).flatten(-2).to(torch.uint8)
    raise KvcheckError(f"turboquant packs 3- or 4-bit codes, not {bits}-bit.")


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``uint8 [..., bytes]`` → int64 codes ``[..., d]``."""
    p = packed.to(torch.int64)
    if bits == 4:
        return torch.stack([p & 0xF, p >> 4], -1).flatten(-2)
    if bits == 3:
        b = p.unflatten(-1, (-1, 3))
        word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
        return ((word[..., None] >> (3 * torch.arange(8, device=p.device))) & 7).flatten(-2)
    raise KvcheckError(f"turboquant packs 3- or 4-bit codes, not {bits}-bit.")


def to_f16(t: torch.Tensor) -> torch.Tensor:
    """The float16 store, round to nearest, saturated at ±65504 (the engine's cast would give ±inf)."""
    return t.float().clamp(-F16_MAX, F16_MAX).to(torch.float16)


def f16_error(t: torch.Tensor) -> torch.Tensor:
    """The most ``|to_f16(t) − t|`` may be, as float64: half an fp16 step at ``|t|`` (2⁻²⁵ below the
    normal range), or the excess over 65504 where the store saturates."""
    a = t.double().abs()
    _, e = torch.frexp(a.clamp_min(2.0 ** -14))  # a = m·2^e, m ∈ [0.5, 1): the step is 2^(e − 11)
    half = torch.ldexp(torch.ones_like(a), e - 12)
    return torch.where(a > F16_MAX, a - F16_MAX, half)


def key_bytes(d: int, key_bits: int) -> int:
    """Bytes of one key vector: d (fp8) or ``⌈bits·d/8⌉`` codes + the fp16 norm."""
    return d if key_bits == 8 else code_bytes(d, key_bits) + 2


def value_bytes(d: int, value_bits: int) -> int:
    """Bytes of one value vector: ``⌈bits·d/8⌉`` codes + fp16 scale + fp16 zero."""
    return code_bytes(d, value_bits) + 4


def slot_bytes(d: int, preset: str) -> int:
    """Bytes per token per KV head, keys and values together, rounded up to an even length."""
    kb, vb, _ = PRESETS[preset]
    s = key_bytes(d, kb) + value_bytes(d, vb)
    return s + s % 2
