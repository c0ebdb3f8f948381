"""``vllm_fp8`` — vLLM's ``--kv-cache-dtype fp8`` (= ``fp8_e4m3``): e4m3 codes with one static float32
scale per tensor (keys and values each), as vLLM 0.33 writes them.

Rule: ``code = e4m3(x / scale)``, saturated to ±448 and rounded to nearest, ties to even; dequantised
``code · scale``. The scales are configuration, not data: ``k_scale`` / ``v_scale`` stand for the
checkpoint's per-layer scales, 1.0 when the checkpoint has none (vLLM 0.33 has no dynamic
calibration; on fnuz ROCm it doubles them, which is not mirrored here). Bytes per token per KV head,
keys + values: 2·head_dim (128 at head_dim 64, 256 at 128), plus the two float32 scalars (8 bytes)
per layer. A value beyond 448·scale saturates, so the round-trip bound counts the excess.

The newest ``residual`` tokens can stay in full precision (the engine keeps none: ``residual=0``
mirrors it); each token is quantised as soon as it leaves the residual (blocks of one token).

Engine writers: a CUDA kernel (``__NV_SATFINITE``, round to nearest) and a Triton kernel
(``x / k_scale``, then the store's implicit cast); both run only on a GPU, so the CPU tests pin
kvcheck's rule and the ``gpu``-marked test compares with the Triton writer where vLLM is installed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import formats
from ..errors import KvcheckError
from ..quant import SLACK
from .base import QuantMethod, check_int, register


@dataclass
class PerTensorFP8:
    """e4m3 codes ``[b, kv_heads, n, head_dim]`` and the tensor's float32 scale (a 0-d tensor)."""

    fixed_point: ClassVar[bool] = True  # dq(q(y)) == y bit for bit for y = dq(q(x))
    # (the scale is configuration; a saturated code is its own image)

    codes: torch.Tensor
    scale: torch.Tensor

    def nbytes(self) -> int:
        return self.codes.numel() + self.scale.numel() * self.scale.element_size()

    def cat(self, other: "PerTensorFP8") -> "PerTensorFP8":
        """Append ``other`` along the token axis; one scale serves both (it is the layer's)."""
        if not torch.equal(self.scale, other.scale):
            raise ValueError("cannot concatenate per-tensor fp8 blocks with different scales")
        return PerTensorFP8(torch.cat([self.codes, other.codes], dim=2), self.scale)

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``s·half_ulp_e4m3(min(|x|/s, 448)) + max(|x| − 448·s, 0) + 2⁻²⁰·|x|``: half an e4m3 ulp at the
        entry's binade (2⁻¹⁰ in the subnormal range), the saturation excess, float32 rounding."""
        s = self.scale.float()
        xa = x.float().abs()
        v = (xa / s).clamp_max(formats.E4M3_MAX)
        ulp = formats.half_ulp(v, formats.E4M3_MANTISSA, formats.E4M3_MIN_EXP)
        return s * ulp + (xa - formats.E4M3_MAX * s).clamp_min(0) + SLACK * xa


def check_scale(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise KvcheckError(f"{what} must be a finite number > 0 (the checkpoint's per-tensor scale; 1.0 when it "
                           f"has none), got {value!r}.")


@register
@dataclass(frozen=True)
class VllmFP8(QuantMethod):
    name = "vllm_fp8"
    engine = "vLLM --kv-cache-dtype fp8"
    block: ClassVar[int] = 1

    k_scale: float = field(default=1.0, metadata={"short": "ks"})
    v_scale: float = field(default=1.0, metadata={"short": "vs"})
    residual: int = field(default=0, metadata={"short": "res"})

    def __post_init__(self):
        check_scale(self.k_scale, "k_scale")
        check_scale(self.v_scale, "v_scale")
        check_int(self.residual, "residual", 0)

    def quantize(self, x: torch.Tensor, scale: float) -> PerTensorFP8:
        s = torch.tensor(scale, dtype=torch.float32, device=x.device)
        return PerTensorFP8(formats.to_e4m3(x.float() / s), s)

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> PerTensorFP8:
        return self.quantize(keys, self.k_scale)

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> PerTensorFP8:
        return self.quantize(values, self.v_scale)

    def dequantize(self, packed: PerTensorFP8, dtype: torch.dtype) -> torch.Tensor:
        return formats.e4m3_to_float(packed.codes).mul_(packed.scale).to(dtype)

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int:
        """head_dim bytes per token, head and tensor, plus one float32 scale per tensor once any token
        is quantised."""
        return 2 * batch * heads * tokens * head_dim + (8 if tokens else 0)
