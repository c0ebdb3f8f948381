"""``streaming_llm`` — StreamingLLM (Xiao et al., 2023, "Efficient Streaming Language Models with
Attention Sinks").

Rule: keep the first ``sinks`` tokens (attention sinks) and the most recent tokens, ``budget`` in all,
where budget = n − int(n × compression_ratio) of the n tokens seen so far. While generating the window
keeps sliding: whenever the cache exceeds the budget of everything seen, the oldest non-sink tokens
go (ratio 0 keeps everything).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..layer_api import HeldSlots, KeepPromise, SlotState
from .base import DecodeEviction, ScoreInputs, check_int, register


@register
@dataclass(frozen=True)
class StreamingLLM(DecodeEviction):
    name = "streaming_llm"

    sinks: int = field(default=4, metadata={"short": "s"})

    def __post_init__(self):
        super().__post_init__()
        check_int(self.sinks, "sinks", 0)

    def promises(self) -> KeepPromise:
        """The sinks, and, once the prompt holds them all, exactly the sinks plus the newest tokens."""
        return KeepPromise(sinks=self.sinks, exact=True)

    def _rank(self, positions: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Recency as score; sinks (the first ``sinks`` real tokens) rank above everything."""
        pos = positions.float()
        is_sink = (positions - first) < self.sinks
        return torch.where(is_sink, torch.full_like(pos, float("inf")), pos)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        b, h = inputs.keys.shape[:2]
        first = torch.zeros(b, 1, dtype=torch.long, device=inputs.positions.device)
        scores = self._rank(inputs.positions, first)  # positions start at 0 on the first real token
        return scores[:, None, :].expand(b, h, -1)

    def decode_scores(self, held: HeldSlots, queries, scaling, state: SlotState) -> torch.Tensor:
        return self._rank(held.positions, torch.zeros_like(held.positions[..., :1]))
