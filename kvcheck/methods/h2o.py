"""``h2o`` — H2O heavy hitters (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative
Inference of Large Language Models").

Rule: a token's score is the attention it has received so far, summed over every query that saw it
(all prompt queries at prefill, then each generated query) and averaged over the query heads of its
KV group. The ``recent`` newest tokens are always kept (ranked by recency above every heavy hitter, so
a budget smaller than ``recent`` keeps the newest tokens); the rest of the budget goes to the best
accumulated scores. While generating, every new query's attention is added to the held tokens'
scores (kept in ``layer.state["score"]``, new tokens start at 0), and whenever the cache holds more
than the budget of all tokens seen so far, the lowest-ranked held tokens go.
Prefill scores are computed ``CHUNK`` query rows at a time: memory is O(CHUNK × seq), never seq × seq.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import EvictionMethod, ScoreInputs, check_int, register

CHUNK = 256  # query rows per attention block when accumulating


def received_attention(queries: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor,
                       key_pos: torch.Tensor, q_pos: torch.Tensor, q_valid: torch.Tensor, scaling: float,
                       queries_last: bool = False, chunk: int = CHUNK) -> torch.Tensor:
    """Attention each key receives, summed over queries and averaged over each GQA group: ``[b, kv_heads, n]``.

    queries ``[b, q_heads, q, d]``; keys ``[b, kv_heads, n, d]``; key_valid / key_pos ``[b, kv_heads, n]``;
    q_pos / q_valid ``[b, q]``. A query sees the valid keys at or before its position; invalid queries
    (padding) contribute nothing. ``queries_last``: the slots are in positional order and the queries
    are the last ``q`` of them, so a chunk of query rows never looks past its own last slot.
    """
    b, hq, q, d = queries.shape
    hk, n = keys.shape[1], keys.shape[2]
    g = hq // hk
    kt = keys.transpose(-1, -2)[:, :, None]  # [b, hk, 1, d, n]
    total = torch.zeros(b, hk, n, dtype=torch.float32, device=keys.device)
    for s in range(0, q, chunk):
        c = min(chunk, q - s)
        e = n - q + s + c if queries_last else n  # slots this chunk can see
        logits = torch.matmul(queries[:, :, s:s + c].reshape(b, hk, g, c, d), kt[..., :e]).float() * scaling
        rows = q_valid[:, s:s + c]  # [b, c]
        seen = key_valid[:, :, None, :e] & (key_pos[:, :, None, :e] <= q_pos[:, None, s:s + c, None])
        seen |= ~rows[:, None, :, None]  # padding rows see everything (no empty softmax), then count 0
        attn = torch.softmax(logits.masked_fill(~seen[:, :, None], float("-inf")), dim=-1)  # [b, hk, g, c, e]
        summed = torch.matmul(rows.to(attn.dtype)[:, None, None, None, :], attn)  # [b, hk, g, 1, e]
        total[..., :e] += summed[:, :, :, 0].mean(dim=2)
    return total


@register
@dataclass(frozen=True)
class H2O(EvictionMethod):
    name = "h2o"
    acts_on_decode = True
    stateful = True

    recent: int = field(default=32, metadata={"short": "rec"})

    def __post_init__(self):
        super().__post_init__()
        check_int(self.recent, "recent", 0)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        """The raw accumulated attention (the running state); :meth:`decode_scores` ranks it."""
        b, hk, t, _ = inputs.keys.shape
        valid = inputs.valid[:, None].expand(b, hk, t)
        pos = inputs.positions[:, None].expand(b, hk, t)
        return received_attention(inputs.queries, inputs.keys, valid, pos, inputs.positions, inputs.valid,
                                  inputs.scaling, queries_last=True)

    def decode_scores(self, layer, queries, scaling) -> torch.Tensor:
        """Add the new queries' attention (the layer's last ``q`` slots are theirs; ``q`` may be 0) to
        the running scores, then rank: the ``recent`` newest held tokens first (newest highest), then
        the rest by accumulated attention."""
        q = queries.shape[2]
        if q:
            layer.state["score"] = layer.state["score"] + received_attention(
                queries, layer.keys, layer.valid, layer.positions, layer.positions[:, 0, -q:],
                layer.valid[:, 0, -q:], scaling, queries_last=True)
        acc, pos, valid = layer.state["score"], layer.positions, layer.valid
        newest = pos.masked_fill(~valid, -1).amax(dim=-1, keepdim=True)
        recent = valid & (pos > newest - self.recent)
        top = acc.masked_fill(~valid, 0).amax(dim=-1, keepdim=True) + 1
        return torch.where(recent, top + pos.float(), acc)
