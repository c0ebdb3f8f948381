"""``keydiff`` — KeyDiff (Park et al., 2025, "KeyDiff: Key Similarity-Based KV Cache Eviction for
Long-Context LLM Inference in Resource-Constrained Environments"), as kvpress 0.5.5 computes it
(``presses/keydiff_press.py``, and ``presses/block_press.py`` for the block variant).

Rule, per layer and KV head at prefill, over each sample's real tokens only (left padding takes no
part): ``anchor = mean_t k_t/‖k_t‖`` over the real cached (post-RoPE) keys, and ``score_t =
−cos(k_t, anchor)`` (``F.cosine_similarity``, eps 1e-8): the keys least like the average are kept.
No sinks, no window, no other parameter.

``block = 0``: the ``budget`` best-scored tokens are kept. ``block = B > 0``: kvpress's
``BlockPress(KeyDiffPress(r), block_size=B)``, the paper's block-wise prefill: start from the first
``budget`` real tokens; for each following block of ``B`` tokens (one block of every remaining token
when ``B`` ≥ the prompt), re-score kept ∪ block with the anchor recomputed on that set, and keep its
``budget`` best (a stable descending ranking: equal scores keep the earlier slot of the set, which
lists the kept tokens best first, then the block in positional order). The scores returned make the
cache keep exactly that set: a kept token's score is its score in the last round, a dropped token's
is its score in the round that dropped it minus 3 (below every kept score, −cos lying in [−1, 1]).

Kept tokens stay in positional order; compresses at prefill only. Bytes held per kept token per KV
head: key + value, ``2 · head_dim`` elements (256 bytes at head_dim 64 in fp16); no per-slot state.

Differences from kvpress, on purpose: the kept count is kvcheck's ``n − int(n·r)`` unless
``count="kvpress"`` (``max(1, int(n·(1 − r)))``, which the block rounds use too; see
:mod:`kvcheck.methods.counts`); arithmetic in float32 whatever the model dtype (kvpress: the model
dtype, where bf16 ties many scores); the anchor over real tokens only (kvpress never pads). Equal
scores: kvpress's ``topk`` order is unspecified; here the earlier position (stable ranking).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import EvictionMethod, ScoreInputs, check_int, register
from .counts import check_count_rule, counted

DROPPED = 3.0  # subtracted from a dropped token's score: below every kept score (−cos ∈ [−1, 1])


def keydiff_scores(keys: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``−cos(k_t, mean of k/‖k‖ over real tokens)`` ``[..., n]`` for keys ``[..., n, d]`` and the
    mask ``real`` ``[..., n]`` (the anchor's tokens); float32."""
    keys = keys.float()
    unit = F.normalize(keys, p=2, dim=-1).masked_fill(~real[..., None], 0.0)
    anchor = unit.sum(dim=-2, keepdim=True) / real.sum(dim=-1).clamp_min(1)[..., None, None]
    return -F.cosine_similarity(keys, anchor, dim=-1)


def block_kept(keys: torch.Tensor, budget: int, block: int) -> torch.Tensor:
    """BlockPress over one sample's real keys ``[h, n, d]``: scores ``[h, n]`` whose top ``budget`` per
    head is the block-wise kept set (see the module docstring)."""
    h, n, _ = keys.shape
    everything = torch.ones(h, n, dtype=torch.bool, device=keys.device)
    if budget >= n:
        return keydiff_scores(keys, everything)
    step = block if block < n else n
    out = torch.empty(h, n, dtype=torch.float32, device=keys.device)
    kept = torch.arange(budget, device=keys.device).expand(h, budget)
    kept_scores = None
    for start in range(budget, n, step):
        new = torch.arange(start, min(start + step, n), device=keys.device).expand(h, -1)
        cur = torch.cat([kept, new], dim=-1)  # [h, m]
        s = keydiff_scores(keys.gather(1, cur[..., None].expand(-1, -1, keys.shape[-1])), everything[:, :cur.shape[1]])
        order = s.argsort(dim=-1, descending=True, stable=True)
        out.scatter_(1, cur.gather(1, order[:, budget:]), s.gather(1, order[:, budget:]) - DROPPED)
        kept, kept_scores = cur.gather(1, order[:, :budget]), s.gather(1, order[:, :budget])
    out.scatter_(1, kept, kept_scores)
    return out


@register
@dataclass(frozen=True)
class KeyDiff(EvictionMethod):
    name = "keydiff"
    engine = "kvpress KeyDiffPress (block > 0: BlockPress(KeyDiffPress, block_size=block))"

    block: int = field(default=0, metadata={"short": "b"})
    count: str = field(default="kvcheck", metadata={"short": "cnt"})

    def __post_init__(self):
        super().__post_init__()
        check_int(self.block, "block", 0)
        check_count_rule(self.count, "keydiff")

    def budget(self, n_tokens: int, layer_idx: int, n_layers: int) -> int:
        return counted(self.count, n_tokens, self.compression_ratio)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        b, hk, t, _ = inputs.keys.shape
        real = inputs.valid[:, None].expand(b, hk, t)
        if not self.block:
            return keydiff_scores(inputs.keys, real).masked_fill(~real, float("-inf"))
        out = torch.full((b, hk, t), float("-inf"), dtype=torch.float32, device=inputs.keys.device)
        for i in range(b):
            idx = inputs.valid[i].nonzero().squeeze(-1)
            if idx.numel():
                budget = self.budget(idx.numel(), inputs.layer_idx, inputs.n_layers)
                out[i, :, idx] = block_kept(inputs.keys[i][:, idx], budget, self.block)
        return out
