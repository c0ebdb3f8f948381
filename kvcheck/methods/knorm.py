"""``knorm`` — key-norm eviction (Devoto et al., 2024, "A Simple and Effective L2 Norm-Based Strategy
for KV Cache Compression").

Rule: keep the tokens whose keys have the lowest L2 norm (score = −‖k‖, per KV head, on the cached
post-RoPE keys, whose norm RoPE leaves unchanged). Kept tokens stay in positional order. Compresses at
prefill only; needs no attention weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import EvictionMethod, ScoreInputs, register


@register
@dataclass(frozen=True)
class KNorm(EvictionMethod):
    name = "knorm"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        return -inputs.keys.float().norm(dim=-1)
