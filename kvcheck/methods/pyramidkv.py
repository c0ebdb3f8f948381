"""``pyramidkv`` — PyramidKV (Cai et al., 2024, "PyramidKV: Dynamic KV Cache Compression based on
Pyramidal Information Funneling").

Rule: tokens are scored exactly as SnapKV (observation-window attention, pooled, window always kept);
only the per-layer budgets differ. With the uniform budget B = n − int(n × compression_ratio), window
w = min(window, B) and a = B − w tokens to spread per layer, the layers' extra budgets fall linearly
from ``hi`` (layer 0) to ``lo`` (last layer), where

    lo = max(a // beta, 2a − (n − w)),   hi = 2a − lo

(PyramidKV's β rule, raised when needed so that no layer asks for more than n tokens). Layer l keeps
w + floor(hi − l × (hi − lo) / (L − 1)) tokens, plus one for layers 1..r, r being the rounding left
over, so budgets never rise with depth, every layer keeps at least w, and the total over layers is
exactly L × B, as with uniform budgets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .base import check_int, keep_count, register
from .snapkv import SnapKV


@register
@dataclass(frozen=True)
class PyramidKV(SnapKV):
    name = "pyramidkv"

    beta: int = field(default=20, metadata={"short": "beta"})

    def __post_init__(self):
        super().__post_init__()
        check_int(self.beta, "beta", 1)

    def budget(self, n_tokens: int, layer_idx: int, n_layers: int) -> int:
        total = keep_count(n_tokens, self.compression_ratio)
        w = min(self.window, total)
        a = total - w
        if n_layers < 2 or a == 0:
            return total
        lo = max(a // self.beta, 2 * a - (n_tokens - w))
        hi = 2 * a - lo
        step = hi - lo  # spread over n_layers − 1 gaps

        def extra(l: int) -> int:  # floor(hi − l·step / (L − 1)), in integers
            return hi - (-(-l * step // (n_layers - 1)))

        left = n_layers * a - sum(extra(l) for l in range(n_layers))
        return w + extra(layer_idx) + int(1 <= layer_idx <= left)
