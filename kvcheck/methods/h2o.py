"""``h2o`` — H2O heavy hitters (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative
Inference of Large Language Models").

Rule: a token's score is the attention it has received so far, summed over every query that saw it
(all prompt queries at prefill, then each generated query) and averaged over the query heads of its
KV group. The ``recent`` newest tokens are always kept (ranked by recency above every heavy hitter, so
a budget smaller than ``recent`` keeps the newest tokens); the rest of the budget goes to the best
accumulated scores. While generating, every new query's attention is added to the held tokens'
scores (the per-slot state ``"score"``, which the cache gathers with the slots; new tokens start
at 0), and whenever the cache holds more
than the budget of all tokens seen so far, the lowest-ranked held tokens go.
Prefill scores are computed a block of query rows at a time: memory is O(rows × seq), never seq × seq.
On CPU, an unpadded prefill computes the layer's attention output from those same weights
(:meth:`H2O.prefill_attention`), so the logits are computed once and not a second time for the scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..layer_api import HeldSlots, KeepPromise, SlotState
from .base import ScoreInputs, StatefulEviction, check_int, register
from .kernels import received_attention  # also importable from here


@register
@dataclass(frozen=True)
class H2O(StatefulEviction):
    name = "h2o"

    recent: int = field(default=32, metadata={"short": "rec"})

    def __post_init__(self):
        super().__post_init__()
        check_int(self.recent, "recent", 0)

    def promises(self) -> KeepPromise:
        return KeepPromise(recent=self.recent)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        """The raw accumulated attention (the running state); :meth:`decode_scores` ranks it."""
        b, hk, t, _ = inputs.keys.shape
        valid = inputs.valid[:, None].expand(b, hk, t)
        pos = inputs.positions[:, None].expand(b, hk, t)
        return received_attention(inputs.queries, inputs.keys, valid, pos, inputs.positions, inputs.valid,
                                  inputs.scaling, queries_last=True)

    def prefill_attention(self, queries, keys, values, scaling):
        """The prompt's attention and its scores from the same softmax weights: the scores need every
        query's weights, which the attention kernel computes but does not give out, so computing both
        here saves a second pass over the logits."""
        b, hk, t, _ = keys.shape
        pos = torch.arange(t, device=keys.device)[None].expand(b, t)
        valid = torch.ones(b, t, dtype=torch.bool, device=keys.device)
        scores, out = received_attention(queries, keys, valid[:, None].expand(b, hk, t), pos[:, None].expand(b, hk, t),
                                         pos, valid, scaling, queries_last=True, values=values)
        return out, scores

    def observe(self, held: HeldSlots, queries, scaling, state: SlotState) -> SlotState:
        """The running scores plus the new queries' attention (the last ``q`` held slots are theirs)."""
        q_pos, q_valid = held.newest(queries.shape[2])
        return {"score": state["score"] + received_attention(
            queries, held.keys, held.valid, held.positions, q_pos, q_valid, scaling, queries_last=True)}

    def decode_scores(self, held: HeldSlots, queries, scaling, state: SlotState) -> torch.Tensor:
        """Rank the held slots: the ``recent`` newest tokens first (newest highest), then the rest by
        accumulated attention (``state["score"]``, already updated by :meth:`observe`)."""
        acc, pos, valid = state["score"], held.positions, held.valid
        newest = pos.masked_fill(~valid, -1).amax(dim=-1, keepdim=True)
        recent = valid & (pos > newest - self.recent)
        top = acc.masked_fill(~valid, 0).amax(dim=-1, keepdim=True) + 1
        return torch.where(recent, top + pos.float(), acc)
