"""``random`` — uniform random eviction: the control every method must beat.

Rule: every (layer, KV head, token position) draws a uniform number from a CPU generator seeded with
``seed × 1_000_003 + layer``, drawn position by position (row p of a ``[positions, kv_heads]`` draw);
the ``budget`` tokens with the largest draws are kept, i.e. a uniformly random keep set of the
budget's size. The draw depends only on (seed, layer, head, position), so a sample keeps the same
tokens whatever batch or padding it runs in. Compresses at prefill only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import EvictionMethod, ScoreInputs, check_int, register


@register
@dataclass(frozen=True)
class RandomKeep(EvictionMethod):
    name = "random"

    seed: int = field(default=0, metadata={"short": "seed"})

    def __post_init__(self):
        super().__post_init__()
        check_int(self.seed, "seed", 0)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        hk = inputs.keys.shape[1]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + inputs.layer_idx)
        draws = torch.rand(int(inputs.positions.max()) + 1, hk, generator=gen)  # row p: position p
        return draws.to(inputs.keys.device)[inputs.positions].permute(0, 2, 1)  # [b, hk, t]
