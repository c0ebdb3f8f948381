"""``expected_attention`` — Expected Attention (Devoto et al., 2025, "Expected Attention: KV Cache
Compression by Estimating Attention from Future Queries Distribution"), as kvpress 0.5.5's
``ExpectedAttentionPress`` computes it (``presses/expected_attention_press.py``).

Rule, per layer at prefill, for each sample over its real tokens only (left padding takes no part):
the first ``n_sink`` real tokens are sinks; the other ``m`` real tokens are the body.

1. ``Q``: the body's queries before RoPE (``ScoreInputs.queries_pre_rope``: the model's queries
   rotated back from their positions; kvpress re-projects the layer's input instead: the same values).
2. ``μ = mean_t Q``, ``Σ = (Q − μ)ᵀ(Q − μ) / m`` (biased), per query head.
3. Averaged RoPE over the next ``n_future_positions`` positions ``p = T … T + F − 1`` (T = the
   sample's last real position + 1): ``R̄ = mean_p (diag(cos_p) + diag(sin_p)·P)`` with
   ``P x = rotate_half(x)``; ``μ' = R̄μ``, ``Σ' = R̄ Σ R̄ᵀ``. Without a rotation (``NO_ROPE``) R̄ = I.
4. ``s_t = μ'·k_t / √d + k_tᵀ Σ' k_t / (2d)`` for every body key (GQA: each query head with its KV
   head's keys; ``d`` = head_dim, not the attention scaling); the second term only with
   ``use_covariance``.
5. ``softmax_t(s)`` over the body, then the mean over each KV head's group of query heads.
6. With ``use_vnorm``: ``score = (score + epsilon) · ‖v_t‖₂``.
7. Sinks score +∞ (kept first, by position); padding −∞. Nothing else is protected (no recent window).

The ``budget`` tokens per KV head with the highest scores are kept, in positional order; compresses
at prefill only. Bytes held per kept token per KV head: key + value, ``2 · head_dim`` elements
(256 bytes at head_dim 64 in fp16); no per-slot state.

Differences from kvpress, on purpose:

- kept count: kvcheck's ``n − int(n·r)`` by default; ``count="kvpress"`` keeps kvpress's
  ``max(1, int(n·(1 − r)))`` (see :mod:`kvcheck.methods.counts`).
- sinks: +∞ here, ``max(scores) + 1`` over the whole batch in kvpress (the same ranking).
- a prompt of at most ``n_sink`` real tokens is all sinks here; kvpress asserts ``T > n_sink``.
- arithmetic in float32 whatever the model dtype (kvpress: the model dtype; under bf16 the scores
  differ by bf16 rounding).
- padding: kvpress never pads (batch 1); here μ, Σ, the softmax, the sinks and T come from each
  sample's real tokens, so a left-padded sample scores as it does alone.
- equal scores are ranked by position here, by ``topk``'s order in kvpress. They occur where a very
  peaked head's softmax underflows to exactly 0 in float32 (SmolLM2-135M, 512 tokens: one head of
  layer 18), so kept sets there may differ among the zero-scored tokens.

Not reproduced: kvpress's eval registry wraps this press in ``AdaKVPress`` (head-wise budgets,
``epsilon=1e-2``); inside kvpress's ``DecodingPress`` the future positions start at the decode
buffer's length, not at the prompt's. A rotation other than ``rotate_half`` over the whole head
raises (see :mod:`kvcheck.methods.rope`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import KvcheckError
from ..layer_api import KeepPromise
from .rope import rotate_half
from .base import EvictionMethod, ScoreInputs, check_int, register
from .counts import check_count_rule, counted


def averaged_rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``R̄ = mean_p (diag(cos_p) + P·diag(sin_p))`` ``[b, d, d]`` from ``cos, sin`` ``[b, F, d]``, ``P``
    the matrix of ``rotate_half`` (``P[d/2:, :d/2] = I``, ``P[:d/2, d/2:] = −I``), as kvpress builds it
    (equal to ``diag(sin_p)·P``: RoPE repeats its frequencies over the two halves)."""
    d = cos.shape[-1]
    eye = torch.eye(d, dtype=cos.dtype, device=cos.device)
    p = rotate_half(eye).T  # column j of rotate_half's matrix is rotate_half(e_j)
    return torch.diag_embed(cos.mean(dim=1)) + p * sin.mean(dim=1)[:, None, :]


@register
@dataclass(frozen=True)
class ExpectedAttention(EvictionMethod):
    name = "expected_attention"
    engine = "kvpress ExpectedAttentionPress"

    n_future_positions: int = field(default=512, metadata={"short": "fp"})
    n_sink: int = field(default=4, metadata={"short": "s"})
    use_covariance: bool = field(default=True, metadata={"short": "cov"})
    use_vnorm: bool = field(default=True, metadata={"short": "vn"})
    epsilon: float = field(default=0.0, metadata={"short": "eps"})
    count: str = field(default="kvcheck", metadata={"short": "cnt"})

    def __post_init__(self):
        super().__post_init__()
        check_int(self.n_future_positions, "n_future_positions", 1)
        check_int(self.n_sink, "n_sink", 0)
        for flag in ("use_covariance", "use_vnorm"):
            if not isinstance(getattr(self, flag), bool):
                raise KvcheckError(f"expected_attention: {flag} must be True or False, got {getattr(self, flag)!r}.")
        eps = self.epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise KvcheckError(f"expected_attention: epsilon must be a finite number >= 0, got {eps!r}.")
        check_count_rule(self.count, "expected_attention")

    def budget(self, n_tokens: int, layer_idx: int, n_layers: int) -> int:
        return counted(self.count, n_tokens, self.compression_ratio)

    def promises(self) -> KeepPromise:
        return KeepPromise(sinks=self.n_sink) if self.n_sink else KeepPromise()

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        keys, values, valid = inputs.keys.float(), inputs.values.float(), inputs.valid
        b, hk, t, d = keys.shape
        g = inputs.groups
        rank = valid.long().cumsum(dim=-1) - 1  # index among the sample's real tokens
        sink = valid & (rank < self.n_sink)
        body = valid & ~sink  # [b, t]
        m = body.sum(dim=-1).clamp_min(1).float()[:, None, None]  # [b, 1, 1]

        q = inputs.queries_pre_rope().masked_fill(~body[:, None, :, None], 0.0)  # [b, hq, t, d]
        mu = q.sum(dim=2) / m  # [b, hq, d]
        start = inputs.positions.masked_fill(~valid, -1).amax(dim=-1) + 1  # [b]
        future = start[:, None] + torch.arange(self.n_future_positions, device=start.device)[None]
        cos, sin = inputs.rope.cos_sin(future, d)
        rot = averaged_rotation(cos, sin)[:, None]  # [b, 1, d, d]
        mu_r = (rot @ mu[..., None]).squeeze(-1)  # [b, hq, d]

        k = keys.repeat_interleave(g, dim=1)  # [b, hq, t, d]
        logits = (k @ mu_r[..., None]).squeeze(-1) / math.sqrt(d)  # [b, hq, t]
        if self.use_covariance:
            centred = (q - mu[:, :, None]).masked_fill(~body[:, None, :, None], 0.0)
            cov = centred.transpose(-1, -2) @ centred / m[..., None]  # [b, hq, d, d]
            cov_r = rot @ cov @ rot.transpose(-1, -2)
            logits = logits + ((k @ cov_r) * k).sum(dim=-1) / d / 2
        logits = logits.masked_fill(~body[:, None], float("-inf"))
        probs = torch.softmax(logits, dim=-1).masked_fill(~body[:, None], 0.0)  # rows with no body: 0, not NaN
        scores = probs.view(b, hk, g, t).mean(dim=2)
        if self.use_vnorm:
            scores = (scores + self.epsilon) * values.norm(dim=-1)
        scores = scores.masked_fill(sink[:, None], float("inf"))
        return scores.masked_fill(~valid[:, None], float("-inf"))
