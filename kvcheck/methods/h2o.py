"""``h2o`` — H2O heavy hitters (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle for Efficient Generative
Inference of Large Language Models").

Rule: a token's score is the attention it has received so far, summed over every query that saw it
(all prompt queries at prefill, then each generated query) and averaged over the query heads of its
KV group. The ``recent`` newest tokens are always kept (ranked by recency above every heavy hitter, so
a budget smaller than ``recent`` keeps the newest tokens); the rest of the budget goes to the best
accumulated scores. While generating, every new query's attention is added to the held tokens'
scores (kept in ``layer.state["score"]``, new tokens start at 0), and whenever the cache holds more
than the budget of all tokens seen so far, the lowest-ranked held tokens go.
Prefill scores are computed a block of query rows at a time: memory is O(rows × seq), never seq × seq.
On CPU, an unpadded prefill computes the layer's attention output from those same weights
(:meth:`H2O.prefill_attention`), so the logits are computed once and not a second time for the scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import EvictionMethod, ScoreInputs, check_int, register

CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 23}  # score elements per block: cache-sized on CPU
_NO_DIAGONAL = torch.zeros(0, 0, dtype=torch.bool)


def chunk_rows(b: int, q_heads: int, n: int, device: torch.device) -> int:
    """Query rows per block so that a block of scores ``[b, q_heads, rows, n]`` holds about
    ``CHUNK_ELEMENTS`` floats (L2-sized on CPU, larger on GPU): memory O(rows × n), never n × n."""
    return max(1, CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cuda"]) // max(1, b * q_heads * n))


def received_attention(queries: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor,
                       key_pos: torch.Tensor, q_pos: torch.Tensor, q_valid: torch.Tensor, scaling: float,
                       queries_last: bool = False, chunk: int | None = None,
                       values: torch.Tensor | None = None):
    """Attention each key receives, summed over queries and averaged over each GQA group: ``[b, kv_heads, n]``.

    queries ``[b, q_heads, q, d]``; keys ``[b, kv_heads, n, d]``; key_valid / key_pos ``[b, kv_heads, n]``;
    q_pos / q_valid ``[b, q]``. A query sees the valid keys at or before its position; invalid queries
    (padding) contribute nothing. ``queries_last``: the slots are in positional order and the queries
    are the last ``q`` of them, so a block of query rows never looks past its own last slot.
    ``chunk``: query rows per block (default: :func:`chunk_rows`).

    The GQA group's query heads are stacked into one matrix per KV head (keys are not repeated); when
    every slot and query is real and ``queries_last`` holds, slot order is causal order and only
    each block's diagonal square needs a mask.

    ``values`` ``[b, kv_heads, n, d]``: also return the attention output ``[b, q, q_heads, d]`` from the
    same weights, as ``(scores, output)`` — one pass instead of an attention kernel and then a second
    pass over the same logits for the scores.
    """
    b, hq, q, d = queries.shape
    hk, n = keys.shape[1], keys.shape[2]
    g = hq // hk
    rows_per = chunk or chunk_rows(b, hq, n, keys.device)
    kt = keys.contiguous().transpose(-1, -2)  # [b, hk, d, n]; every block below is a view of it
    causal_slots = queries_last and bool(q_valid.all()) and bool(key_valid.all())
    all_rows = bool(q_valid.all())
    exact_dtype = queries.dtype == torch.float32
    one_block = 0 < q <= rows_per  # e.g. a decode step: no running total needed
    total = None if one_block else torch.zeros(b, hk, n, dtype=torch.float32, device=keys.device)
    out = None if values is None else torch.empty(b, hk, g, q, d, dtype=values.dtype, device=values.device)
    vv = None if values is None else values.contiguous().view(b * hk, n, d)
    diagonal = _NO_DIAGONAL
    for s in range(0, q, rows_per):
        c = min(rows_per, q - s)
        e = n - q + s + c if queries_last else n  # slots this block can see
        kc = kt[..., :e].reshape(b * hk, d, e)
        if exact_dtype:  # scale the few query rows rather than the block of scores
            logits = torch.bmm((queries[:, :, s:s + c] * scaling).reshape(b * hk, g * c, d), kc)
        else:  # half precision: scale in float32 after the product
            logits = torch.bmm(queries[:, :, s:s + c].reshape(b * hk, g * c, d), kc).float().mul_(scaling)
        logits = logits.view(b, hk, g, c, e)
        # causal slots and a single query row (a decode step): it sees all its ``e`` slots, no mask
        if causal_slots and c > 1:
            if diagonal.shape[0] != c:  # row i of the block is slot e − c + i: it sees the slots before it
                diagonal = torch.ones(c, c, dtype=torch.bool, device=keys.device).triu_(1)
            logits[..., e - c:].masked_fill_(diagonal, float("-inf"))
        elif not causal_slots:
            seen = key_valid[:, :, None, :e] & (key_pos[:, :, None, :e] <= q_pos[:, None, s:s + c, None])
            seen |= ~q_valid[:, None, s:s + c, None]  # padding rows see everything (no empty softmax)
            logits.masked_fill_(~seen[:, :, None], float("-inf"))
        attn = torch.softmax(logits, dim=-1)  # [b, hk, g, c, e]
        if out is not None:
            out[:, :, :, s:s + c] = torch.bmm(attn.view(b * hk, g * c, e).to(vv.dtype), vv[:, :e]).view(b, hk, g, c, d)
        if not all_rows:
            attn.mul_(q_valid[:, None, None, s:s + c, None])  # padding rows count 0
        block = attn.view(b, hk, g * c, e).sum(dim=2)
        if one_block:  # the only block: every query, every slot (e == n)
            total = block
            break
        total[..., :e] += block
    total = total.div_(g)
    if out is None:
        return total
    return total, out.view(b, hq, q, d).transpose(1, 2).contiguous()


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

    def observe(self, layer, queries, scaling) -> None:
        """Add the new queries' attention (the layer's last ``q`` slots are theirs) to the running scores."""
        q = queries.shape[2]
        layer.state["score"] = layer.state["score"] + received_attention(
            queries, layer.keys, layer.valid, layer.positions, layer.positions[:, 0, -q:],
            layer.valid[:, 0, -q:], scaling, queries_last=True)

    def decode_scores(self, layer, queries, scaling) -> torch.Tensor:
        """Rank the held slots: the ``recent`` newest tokens first (newest highest), then the rest by
        accumulated attention (``layer.state["score"]``, already updated by :meth:`observe`)."""
        acc, pos, valid = layer.state["score"], layer.positions, layer.valid
        newest = pos.masked_fill(~valid, -1).amax(dim=-1, keepdim=True)
        recent = valid & (pos > newest - self.recent)
        top = acc.masked_fill(~valid, 0).amax(dim=-1, keepdim=True) + 1
        return torch.where(recent, top + pos.float(), acc)
