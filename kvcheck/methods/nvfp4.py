"""``nvfp4`` — vLLM 0.33's ``--kv-cache-dtype nvfp4`` (SM100 writer ``csrc/nvfp4_kv_cache_kernels.cu``
with ``cvt_warp_fp16_to_fp4`` of ``csrc/quantization/fp4/nvfp4_utils.cuh``): FP4 e2m1 codes in blocks
of 16 channels, one e4m3 scale per block, one per-layer global scale; keys and values alike.

Rule, per token, KV head and block of 16 channels ``x`` (float32 of the cached dtype), with the
global scale ``kv_scale`` (the engine's checkpoint ``k_scale``/``v_scale``, 1.0 when the checkpoint
has none; kvcheck has no checkpoint scales, so one value serves keys and values):

- ``SFScale = 1/kv_scale``; ``SF = e4m3_rn_sat(SFScale·(amax|x|·(1/6)))``;
  ``outScale = 1/(SF·(1/SFScale))`` (0 when SF = 0);
- codes ``q = e2m1_rn_sat(x·outScale)`` (:mod:`kvcheck.formats_fp4`: ties to even, saturating at ±6),
  two per byte, element 2i in the low nibble;
- dequantise ``x̂ = q·(SF·kv_scale)``: SF = 0 gives zeros; nothing beyond ``6·448·kv_scale`` survives.

Bytes per token per KV head, keys and values together: ``2·(d/2 + d/16)`` (72 at d = 64, 144 at
128; ``vllm/utils/torch_utils.py:nvfp4_kv_cache_full_dim``). The two float32 global scales per layer
are configuration, not counted (the engine's table does not count them either). head_dim must be a
multiple of 16 (the engine checks it; it also refuses d = 64 on SM 8.x/9.x/12.x).

The engine writes this format on GPU only. Its reciprocals are ``rcp.approx.ftz``, here IEEE float32
ones, which can move ``outScale`` by an ulp, so an entry sitting exactly on an e2m1 boundary may
round the other way there; the engine keeps value-cache scales 4×4-swizzled for trtllm-gen, a layout
that changes no value. On SM 8.0/9.0/12.0 the engine writes plain ``nvfp4`` through FlashInfer's
``nvfp4_quantize_append_paged_kv_cache_with_slot_mapping``, whose arithmetic was not checked. Codes
and scales against the SM100 writer: ``tests/test_engine_formats_fp4_int4.py``'s ``gpu`` tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import formats_fp4 as f4
from .. import quant
from ..errors import KvcheckError
from .base import QuantMethod, check_int, register

BLOCK = 16  # channels per e4m3 block scale
SLACK = 2.0 ** -20  # float32 rounding of outScale and of the dequantising products


def block_view(x: torch.Tensor) -> torch.Tensor:
    """``[..., d]`` → ``[..., d/16, 16]``."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // BLOCK, BLOCK)


@dataclass
class NVFP4Tensor:
    """e2m1 codes ``uint8 [b, kv_heads, n, head_dim/2]`` (two per byte), block scales ``float8_e4m3fn
    [b, kv_heads, n, head_dim/16]`` and the global scale they are in units of."""

    codes: torch.Tensor
    scale: torch.Tensor
    kv_scale: float

    def nbytes(self) -> int:
        """Codes and block scales (the global scale is the method's configuration)."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale))

    def cat(self, other: "NVFP4Tensor") -> "NVFP4Tensor":
        """Append ``other`` along the token axis (what ``quant.cat`` calls)."""
        if other.kv_scale != self.kv_scale:
            raise ValueError("cannot concatenate NVFP4 blocks with different global scales")
        return NVFP4Tensor(torch.cat([self.codes, other.codes], dim=2), torch.cat([self.scale, other.scale], dim=2),
                           self.kv_scale)

    def unit(self) -> torch.Tensor:
        """The dequantising unit ``SF·kv_scale`` of each block, float32 ``[..., d/16, 1]``."""
        return (self.scale.float() * self.kv_scale)[..., None]

    def values(self) -> torch.Tensor:
        """The dequantised blocks ``q·(SF·kv_scale)``, float32 ``[..., d]``."""
        q = f4.e2m1_decode(quant.unpack(self.codes, 4))
        return (block_view(q) * self.unit()).flatten(-2)

    def exact_requantization(self) -> torch.Tensor:
        """Where ``dq(q(y)) == y`` holds bit for bit for the output ``y`` of this tensor, per entry
        (bool ``[..., head_dim]``): every block whose SF is a normal e4m3 (≥ 2⁻⁶). Such an SF is off
        amax/6 by at most 2⁻⁴ of it, so the block's largest entry sits on the code 6 (4over6: on the
        code 4 of SF4, or on a grid both candidates reproduce), SF re-derives exactly and every code
        with it. A subnormal SF can round up far enough that the largest entry lands on a lower code,
        and the re-derived SF is then smaller: 3·2⁻⁹ comes back from a block of amax 3.06·2⁻⁹, and
        requantises to zero."""
        return (self.scale.float() >= 2.0 ** -6).repeat_interleave(BLOCK, dim=-1)

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Per entry of ``x`` (the tensor packed), with u = SF·kv_scale its block's unit: half the e2m1
        gap around |x|/u (``u/4`` up to 2u, ``u/2`` up to 4u, ``u`` up to 6u); beyond 6u the entry
        saturates to the code 6 and is off by exactly ``|x| − 6u`` (SF capped at 448, or an e4m3 scale
        rounded down); plus ``2⁻²⁰·(|x| + 6u)`` of float32 rounding. A block whose SF is 0 comes back as
        zeros: its bound is |x| (saturation with u = 0)."""
        a = block_view(x.float().abs())
        u = self.unit()
        top = f4.E2M1_MAX * u
        gap = torch.where(a <= 2 * u, u / 4, torch.where(a <= 4 * u, u / 2, torch.where(a <= top, u, a - top)))
        return (gap + SLACK * (a + top)).flatten(-2)


def check_kv_scale(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise KvcheckError(f"{name}: kv_scale must be a positive finite number (the per-layer global scale; "
                           f"1.0 when the checkpoint has none), got {value!r}.")


@register
@dataclass(frozen=True)
class NVFP4(QuantMethod):
    name = "nvfp4"
    engine = "vLLM --kv-cache-dtype nvfp4"
    block: ClassVar[int] = 1
    head_dim_multiple: ClassVar[int] = BLOCK

    residual: int = field(default=0, metadata={"short": "res"})
    kv_scale: float = field(default=1.0, metadata={"short": "kvs"})

    def __post_init__(self):
        check_int(self.residual, "residual", 0)
        check_kv_scale(self.kv_scale, self.name)

    def sf_scale(self) -> float:
        """``SFScale = 1/kv_scale`` in float32."""
        return float(torch.tensor(1.0, dtype=torch.float32) / torch.tensor(self.kv_scale, dtype=torch.float32))

    def block_scales(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks ``g`` ``[..., d/16, 16]`` (float32) → (SF ``float8_e4m3fn [..., d/16]``, outScale
        float32 ``[..., d/16, 1]``): the default rule, amax/6."""
        sf, out = f4.nvfp4_scale(g.abs().amax(dim=-1), 6.0, self.sf_scale())
        return sf, out[..., None]

    def quantize(self, x: torch.Tensor) -> NVFP4Tensor:
        """``x`` ``[b, kv_heads, n, head_dim]`` → codes and block scales."""
        d = x.shape[-1]
        if d % BLOCK:
            raise KvcheckError(f"{self.name}: head_dim must be a multiple of {BLOCK} (one e4m3 scale per "
                               f"{BLOCK} channels, as the engine requires), got {d}.")
        g = block_view(x.float())
        sf, out = self.block_scales(g)
        codes = f4.e2m1_encode(g * out).flatten(-2)
        return NVFP4Tensor(quant.pack(codes, 4), sf, float(self.kv_scale))

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> NVFP4Tensor:
        return self.quantize(keys)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> NVFP4Tensor:
        return self.quantize(values)

    def dequantize(self, packed: NVFP4Tensor, dtype: torch.dtype) -> torch.Tensor:
        return packed.values().to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim/2 bytes of codes + head_dim/16 one-byte scales per token, head and tensor."""
        return 2 * batch * heads * tokens * (head_dim // 2 + head_dim // BLOCK)
