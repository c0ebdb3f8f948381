"""The bit-level pieces of vLLM 0.33's 4-bit KV-cache formats (``int4_per_token_head``, ``nvfp4``,
``nvfp4_4over6``): pure tensor functions, each the transcription of one engine rule, shared by
:mod:`kvcheck.methods.int4_per_token_head`, :mod:`kvcheck.methods.nvfp4` and
:mod:`kvcheck.methods.nvfp4_4over6`.

- **Randomized Hadamard transform** (``vllm/v1/attention/ops/int4_per_token_head.py``,
  ``single_rht``, ``_get_rht_signs``, ``fast_hadamard_transform``): ``rht(x) = H_b · (x ∘ s)`` in
  blocks of ``b`` = the largest power of two dividing the last axis, with ``H_b`` the *unnormalised*
  Sylvester matrix (``H_b · H_b = b·I``, natural order, the engine's CPU butterfly) and ``s`` the
  ±1 vector ``2·bernoulli(0.5) − 1`` drawn by a CPU generator seeded ``0x9E3779B9`` (the same ``s``
  in every block). The inverse the engine applies on read is ``(H_b · y) ∘ s / b``.
- **FP4 e2m1** (the ``cvt.rn.satfinite.e2m1x2.f32`` of ``csrc/quantization/fp4/nvfp4_utils.cuh``,
  spelled out as ``round_to_nearest_e2m1`` in ``csrc/nvfp4_kv_cache_kernels.cu``): a nibble, bit 3
  the sign, bits 0–2 the index into {0, 0.5, 1, 1.5, 2, 3, 4, 6}; round to nearest, ties to the even
  code (|v| ≤ 0.25 → 0, < 0.75 → 0.5, ≤ 1.25 → 1, < 1.75 → 1.5, ≤ 2.5 → 2, < 3.5 → 3, ≤ 5 → 4,
  else 6), saturating at ±6. A negative value that rounds to zero keeps its sign (nibble 0x8), as
  the engine's ``copysignf`` does; whether the hardware ``cvt`` writes 0x8 there too is not verified
  (both decode to zero).
- **e4m3 block scales** (``__nv_fp8_e4m3(float)``): round to nearest even, saturating at 448.
- **Nibble order** (both formats): element 2i in the low nibble of byte i, element 2i+1 in the high
  one, i.e. :func:`kvcheck.quant.pack` with 4 bits.
"""
from __future__ import annotations

import functools

import torch

from .formats import E2M1_VALUES, e2m1_decode, round_half_away  # noqa: F401  (the engine's rounding and e2m1 values)

RHT_SEED = 0x9E3779B9
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E2M1_MAGNITUDES = E2M1_VALUES
RCP6 = float(torch.tensor(1.0 / 6.0, dtype=torch.float32))  # the float32 1/6 the scale rule multiplies by


def hadamard_block(d: int) -> int:
    """The engine's Hadamard block for a head of ``d`` channels: the largest power of two dividing d."""
    return d & -d


@functools.lru_cache(maxsize=None)
def rht_signs(b: int) -> torch.Tensor:
    """The engine's ±1 sign vector of length ``b`` (float32, CPU): ``2·bernoulli(0.5) − 1`` from a CPU
    generator seeded ``0x9E3779B9``. A shorter vector is a prefix of a longer one."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(RHT_SEED)
    return 2.0 * torch.bernoulli(torch.full((b,), 0.5), generator=gen) - 1.0


def sign_bits(signs: torch.Tensor) -> int:
    """A sign vector as an integer, element 0 the most significant bit, 1 for +1 (the golden form)."""
    return int("".join("1" if v > 0 else "0" for v in signs.tolist()), 2)


def wht(x: torch.Tensor) -> torch.Tensor:
    """The unnormalised Walsh–Hadamard transform ``H_d · x`` along the last axis (d a power of two),
    Sylvester's natural order, by the engine's butterfly: the same sums in the same order."""
    d = x.shape[-1]
    if d & (d - 1):
        raise ValueError(f"wht needs a power-of-two last axis, got {d}")
    h = 1
    while h < d:
        v = x.reshape(*x.shape[:-1], d // (2 * h), 2, h)
        a, b = v[..., 0, :], v[..., 1, :]
        x = torch.stack([a + b, a - b], dim=-2).reshape(*x.shape[:-1], d)
        h <<= 1
    return x


def rht(x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """The engine's randomized Hadamard transform along the last axis, block-diagonal in blocks of
    :func:`hadamard_block`: forward ``H_b·(x ∘ s)``, ``inverse`` ``(H_b·x) ∘ s`` (unnormalised both
    ways: ``rht(rht(x), inverse=True) == b·x`` up to rounding). Computes in ``x``'s dtype."""
    d = x.shape[-1]
    b = hadamard_block(d)
    blocks = x.reshape(*x.shape[:-1], d // b, b)
    s = rht_signs(b).to(device=x.device, dtype=x.dtype)
    out = wht(blocks) * s if inverse else wht(blocks * s)
    return out.reshape(x.shape)


def e2m1_encode(v: torch.Tensor) -> torch.Tensor:
    """float32 → e2m1 nibble codes ``uint8`` in [0, 16): round to nearest, ties to even, saturating."""
    a = v.abs()
    idx = ((a > 0.25).to(torch.uint8) + (a >= 0.75) + (a > 1.25) + (a >= 1.75) + (a > 2.5) + (a >= 3.5)
           + (a > 5.0))
    return idx.to(torch.uint8) | (torch.signbit(v).to(torch.uint8) << 3)


def e2m1_round(v: torch.Tensor) -> torch.Tensor:
    """``v`` rounded onto the e2m1 grid (the engine's ``round_to_nearest_e2m1``)."""
    return e2m1_decode(e2m1_encode(v))


def e4m3_round(v: torch.Tensor) -> torch.Tensor:
    """Non-negative float32 → ``torch.float8_e4m3fn``: round to nearest even, saturating at 448."""
    return v.clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)


def nvfp4_scale(amax: torch.Tensor, denominator: float, sf_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One NVFP4 block-scale candidate, the engine's ``nvfp4_candidate_scale``: ``SF =
    e4m3(SFScale·(amax·(1/denominator)))`` and ``outScale = 1/(SF·(1/SFScale))`` (0 where SF is 0).
    Returns ``(SF as float8_e4m3fn, outScale as float32)``. The engine's reciprocals are
    ``rcp.approx.ftz``; these are IEEE float32 ones, which can differ by an ulp."""
    rcp = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(denominator, dtype=torch.float32)
    sf = e4m3_round(sf_scale * (amax * rcp))
    sff = sf.float()
    inv_sf_scale = float(torch.tensor(1.0, dtype=torch.float32) / torch.tensor(sf_scale, dtype=torch.float32))
    out = torch.where(sff != 0, 1.0 / (sff * inv_sf_scale), torch.zeros_like(sff))
    return sf, out
