"""``tova`` — TOVA (Oren et al., 2024, "Transformers are Multi-State RNNs").

Rule: a token's score is the attention the newest query gives it, averaged over every query head of
the layer (the paper's choice: one keep set per layer, shared by all KV heads). Applied at prefill
(the last prompt query) and while generating (the newest query over the held slots): whenever the
cache holds more than the budget of all tokens seen so far, the lowest-scored held tokens go.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layer_api import HeldSlots, SlotState
from .base import DecodeEviction, ScoreInputs, register
from .kernels import received_attention


@register
@dataclass(frozen=True)
class TOVA(DecodeEviction):
    name = "tova"

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        b, hk, t, _ = inputs.keys.shape
        attn = inputs.window_attention(1)[:, :, 0]  # [b, q_heads, t]
        return attn.mean(dim=1, keepdim=True).expand(b, hk, t)

    def decode_scores(self, held: HeldSlots, queries, scaling, state: SlotState) -> torch.Tensor:
        """The newest real query's attention (the last ``q`` held slots belong to ``queries``)."""
        b, hk, n, _ = held.keys.shape
        q = queries.shape[2]
        q_pos, q_valid = held.newest(q)
        if q == 1:  # a decode step: the one new query is the newest, in the last slot
            attn = received_attention(queries, held.keys, held.valid, held.positions, q_pos, q_valid, scaling,
                                      queries_last=True)
            return attn.mean(dim=1, keepdim=True).expand(b, hk, n)
        last = (q_valid.long() * torch.arange(1, q + 1, device=queries.device)).argmax(dim=-1)  # [b]
        rows = torch.arange(b, device=queries.device)
        attn = received_attention(queries[rows, :, last][:, :, None], held.keys, held.valid, held.positions,
                                  q_pos[rows, last][:, None], q_valid[rows, last][:, None], scaling)
        return attn.mean(dim=1, keepdim=True).expand(b, hk, n)
