"""Attention kernels shared by eviction methods: the attention each held key receives from a block of
queries (H2O's accumulated scores, TOVA's newest-query scores), computed a block of query rows at a
time so memory is O(rows × slots), never slots × slots."""
from __future__ import annotations

import torch

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
