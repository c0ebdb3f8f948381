"""``snapkv`` — SnapKV (Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before
Generation").

Rule: the last ``window`` prompt tokens (the observation window) attend over the prompt; a token's
score is its attention averaged over the window queries, smoothed along the sequence by a 1-D pool
of width ``kernel`` (``avg`` or ``max``), and averaged over the query heads of each KV group. The
window itself is always kept; the rest of the budget goes to the best-scored tokens. Compresses at
prefill only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import KvcheckError
from ..layer_api import KeepPromise
from .base import EvictionMethod, ScoreInputs, check_int, register


@register
@dataclass(frozen=True)
class SnapKV(EvictionMethod):
    name = "snapkv"

    window: int = field(default=32, metadata={"short": "w"})
    kernel: int = field(default=5, metadata={"short": "k"})
    pooling: str = field(default="avg", metadata={"short": "p"})

    def __post_init__(self):
        super().__post_init__()
        check_int(self.window, "window", 1)
        check_int(self.kernel, "kernel", 1)
        if self.kernel % 2 == 0:
            raise KvcheckError(f"snapkv: kernel must be odd (centred pooling), got {self.kernel}.")
        if self.pooling not in ("avg", "max"):
            raise KvcheckError(f"snapkv: pooling must be 'avg' or 'max', got {self.pooling!r}.")

    def promises(self) -> KeepPromise:
        return KeepPromise(window=self.window)  # the observation window

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        t = inputs.keys.shape[2]
        w = min(self.window, t)
        attn = inputs.window_attention(w).mean(dim=2)  # [b, hq, t]
        pool = F.avg_pool1d if self.pooling == "avg" else F.max_pool1d
        pooled = pool(attn, kernel_size=self.kernel, stride=1, padding=self.kernel // 2)
        scores = inputs.per_kv_head(pooled)
        scores[..., t - w:] = float("inf")  # the observation window is always kept
        return scores
