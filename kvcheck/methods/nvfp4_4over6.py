"""``nvfp4_4over6`` — vLLM 0.33's ``--kv-cache-dtype nvfp4_4over6`` (SM100 writer
``csrc/nvfp4_kv_cache_kernels.cu``, ``cvt_warp_fp16_to_fp4_4over6``): :mod:`kvcheck.methods.nvfp4`'s
layout and arithmetic, with each block's scale chosen between two candidates.

Rule, per token, KV head and block of 16 channels ``x``: the two candidates of
:func:`kvcheck.formats_fp4.nvfp4_scale`, ``SF6`` (amax/6, the default's) and ``SF4`` (amax/4: the
block's largest entry on the code 4, whose neighbours 3 and 6 sit closer than 6's); for each, the
block's squared error ``Σ (e2m1_rn(x·outScale)·(1/outScale) − x)²`` in float32 (``Σ x²`` when its SF
is 0). ``SF4`` is used iff its error is strictly lower (``err4 < err6``); then codes, storage and
dequantisation are nvfp4's. Bytes per token per KV head, keys and values together: ``2·(d/2 + d/16)``
(72 at d = 64, 144 at 128), the same layout as ``nvfp4``.

Golden (the engine's ``test_nvfp4_4over6_selects_lower_error_scale``): the block ``[6] + [4.5]·15``
with ``k_scale = 1`` comes back ``[6] + [4]·15`` under nvfp4 (SF = 1) and exactly under 4over6
(SF = 1.5, codes 4 and 3).

On the SM100 writer only (the engine accepts 4over6 on SM 10.x alone). The engine's reciprocals are
``rcp.approx.ftz`` and its error sums run in a fixed lane order; here IEEE float32 reciprocals and
torch's sum, so a block whose two errors differ by a float32 rounding may choose the other scale
there. The errors, and so the choice, are the engine's; against the SM100 writer:
``tests/test_engine_formats_fp4_int4.py``'s ``gpu`` tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import formats_fp4 as f4
from .base import register
from .nvfp4 import NVFP4


def block_error(g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The engine's ``nvfp4_reconstruction_error``: blocks ``g`` ``[..., 16]``, outScale ``[..., 1]`` →
    ``Σ (e2m1_rn(g·out)·(1/out) − g)²`` per block (``Σ g²`` where out is 0), float32 ``[...]``."""
    dq = torch.where(out != 0, 1.0 / out, torch.zeros_like(out))
    err = (f4.e2m1_round(g * out) * dq - g).square().sum(dim=-1)
    return torch.where(out[..., 0] != 0, err, g.square().sum(dim=-1))


@register
@dataclass(frozen=True)
class NVFP4FourOverSix(NVFP4):
    name = "nvfp4_4over6"
    engine = "vLLM --kv-cache-dtype nvfp4_4over6"

    def block_scales(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks ``g`` ``[..., d/16, 16]`` → (SF, outScale ``[..., d/16, 1]``): SF4 where its squared
        error is strictly below SF6's, else SF6."""
        amax = g.abs().amax(dim=-1)
        sf6, out6 = f4.nvfp4_scale(amax, 6.0, self.sf_scale())
        sf4, out4 = f4.nvfp4_scale(amax, 4.0, self.sf_scale())
        out6, out4 = out6[..., None], out4[..., None]
        use4 = block_error(g, out4) < block_error(g, out6)
        sf = torch.where(use4, sf4.view(torch.uint8), sf6.view(torch.uint8)).view(torch.float8_e4m3fn)
        return sf, torch.where(use4[..., None], out4, out6)
