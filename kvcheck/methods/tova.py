"""``tova`` — TOVA (Oren et al., 2024, "Transformers are Multi-State RNNs").

Rule: a token's score is the attention the newest query gives it, averaged over every query head of
the layer (the paper's choice: one keep set per layer, shared by all KV heads). Applied at prefill
(the last prompt query) and while generating (the newest query over the held slots): whenever the
cache holds more than the budget of all tokens seen so far, the lowest-scored held tokens go.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import EvictionMethod, ScoreInputs, register
from .h2o import received_attention


@register
@dataclass(frozen=True)
class TOVA(EvictionMethod):
    name = "tova"
    acts_on_decode = True

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        b, hk, t, _ = inputs.keys.shape
        attn = inputs.window_attention(1)[:, :, 0]  # [b, q_heads, t]
        return attn.mean(dim=1, keepdim=True).expand(b, hk, t)

    def decode_scores(self, layer, queries, scaling) -> torch.Tensor:
        """The newest real query's attention (the layer's last ``q`` slots belong to ``queries``)."""
        b, hk, n, _ = layer.keys.shape
        q = queries.shape[2]
        q_valid, q_pos = layer.valid[:, 0, -q:], layer.positions[:, 0, -q:]
        if q == 1:  # a decode step: the one new query is the newest, in the last slot
            attn = received_attention(queries, layer.keys, layer.valid, layer.positions, q_pos, q_valid, scaling,
                                      queries_last=True)
            return attn.mean(dim=1, keepdim=True).expand(b, hk, n)
        last = (q_valid.long() * torch.arange(1, q + 1, device=queries.device)).argmax(dim=-1)  # [b]
        rows = torch.arange(b, device=queries.device)
        attn = received_attention(queries[rows, :, last][:, :, None], layer.keys, layer.valid, layer.positions,
                                  q_pos[rows, last][:, None], q_valid[rows, last][:, None], scaling)
        return attn.mean(dim=1, keepdim=True).expand(b, hk, n)
