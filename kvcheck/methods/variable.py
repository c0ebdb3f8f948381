"""Variable-count eviction: the kept count follows from the scores, not from a budget, so it varies by
sample, KV head and layer (cache layer: :class:`kvcheck.cache.variable.VariableLayer`).

A :class:`VariableEviction` method fills in three steps; the layer keeps, gathers and drops the slots:

- ``score(inputs)`` → ``[batch, kv_heads, q]``: per-token scores of the ``q`` tokens of one forward
  (the whole prompt at prefill, the new tokens while generating), computed once, when the tokens
  arrive, by a per-token scorer (:data:`SCORERS`: one that reads each token's own key or position,
  never other tokens, so a score does not change later). The layer keeps them as the per-slot state
  ``"score"`` (float32, gathered with the slots) when the method names it in ``state_names``.
- ``due(prefill, seen, new, steps)`` → ``[batch]`` bool: which samples compress after this forward.
  ``seen``: tokens seen by each sample (its highest real position + 1); ``new``: its real tokens in
  this forward; ``steps``: decode forwards that brought it a real token since its last compression
  (this one included). A due sample's counter restarts at 0, whatever it keeps.
- ``keep(held, scores, seen, due)`` → ``[batch, kv_heads, slots]`` bool: the held slots that stay
  (rows of samples not due: every slot). The layer drops the rest and every invalid slot, physically.

Bytes per token per KV head held: ``2 × head_dim × element size`` (key + value), plus 4 (the float32
score) when the score is kept as state. Each (sample, head) row is padded with invalid slots to the
longest row of the layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import KvcheckError
from ..layer_api import Capabilities, HeldSlots, ScoreInputs
from .base import EvictionMethod, Method, check_int
from .knorm import KNorm
from .random_keep import RandomKeep

SCORERS: dict[str, EvictionMethod] = {
    "knorm": KNorm(),  # −‖k‖₂ of the token's (post-RoPE) key, in float32
    "random": RandomKeep(seed=0),  # a uniform draw per (layer, KV head, position), seed 0
}
"""The per-token scorers a variable method may name: a kvcheck eviction method whose ``score`` of a
token depends on that token alone (its key, its position). Scorers that read queries or other tokens
(snapkv, tova, h2o) are not per-token: scored one decode step at a time, they would see ``q = 1``."""


def check_scorer(name) -> None:
    if name not in SCORERS:
        raise KvcheckError(f"scorer must be one of {', '.join(sorted(SCORERS))} (a per-token scorer), got {name!r}.")


def check_bool(value, what: str) -> None:
    if not isinstance(value, bool):
        raise KvcheckError(f"{what} must be True or False, got {value!r}.")


def check_float(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise KvcheckError(f"{what} must be a number (not NaN), got {value!r}.")


@dataclass(frozen=True)
class VariableEviction(Method):
    """Base of the variable-count eviction methods (see the module docstring). Subclasses declare a
    ``scorer`` field (a name in :data:`SCORERS`) and fill in :meth:`due` and :meth:`keep`."""

    layer_kind: ClassVar[str] = "variable"
    state_names: ClassVar[tuple[str, ...]] = ("score",)  # () : the scores are dropped once the prompt is cut

    @property
    def evicts_while_generating(self) -> bool:
        return True

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.layer_kind, evicts_on_decode=self.evicts_while_generating,
                            slot_state=self.state_names)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        """The named scorer's per-token scores ``[batch, kv_heads, q]`` of the tokens in ``inputs``."""
        return SCORERS[self.scorer].score(inputs)

    def due(self, prefill: bool, seen: torch.Tensor, new: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def keep(self, held: HeldSlots, scores: torch.Tensor, seen: torch.Tensor, due: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def kvpress_ratio(k_len: int, target: int) -> float:
    """The ratio kvpress's DecodingPress hands its scorer to cut ``k_len`` tokens to ``target``: 0 when
    ``k_len ≤ target``, else a 20-step bisection from ``1 − target/k_len`` until
    ``int(k_len·(1 − r)) == target`` (``decoding_press.py:194-236``)."""
    if k_len <= target:
        return 0.0
    ratio, low, high = 1.0 - target / k_len, 0.0, 1.0
    for _ in range(20):
        n = int(k_len * (1 - ratio))
        if n == target:
            break
        if n > target:
            low, ratio = ratio, (ratio + high) / 2
        else:
            high, ratio = ratio, (low + ratio) / 2
    return ratio


def kvpress_kept(k_len: int, target: int) -> int:
    """Tokens kvpress keeps of ``k_len`` when it compresses to ``target``: all of them at ratio 0,
    else ``max(1, int(k_len·(1 − r)))`` (``utils.compute_n_kept``), r = :func:`kvpress_ratio`. This is
    ``target`` for every ``k_len ≤ 2²⁰`` (checked exhaustively below 1500, by sampling above); past
    that the bisection may stop one token short of it."""
    ratio = kvpress_ratio(k_len, target)
    if ratio == 0:
        return k_len
    return 0 if ratio >= 1 else max(1, int(k_len * (1 - ratio)))


@dataclass(frozen=True)
class DecodeToTarget(VariableEviction):
    """kvpress's DecodingPress rule (subclasses give the fields ``interval`` and ``scorer`` and the
    target, :meth:`target_size`): nothing at prefill; after every decode forward that brings a sample
    real tokens its step counter grows by one, and the sample compresses when the counter reaches
    ``interval`` or when the forward brought at least ``target_size(seen)`` real tokens. Compressing
    keeps, per KV head, the :func:`kvpress_kept` best-scored held tokens (all of them when it holds
    no more than the target; equal scores: the earlier slot first)."""

    def target_size(self, seen: int) -> int:
        raise NotImplementedError

    def targets(self, seen: torch.Tensor) -> list[int]:
        return [self.target_size(int(n)) for n in seen.tolist()]

    def due(self, prefill, seen, new, steps):
        if prefill:
            return torch.zeros_like(new, dtype=torch.bool)
        target = torch.tensor(self.targets(seen), device=new.device)
        return (new > 0) & ((steps >= self.interval) | (new >= target))

    def keep(self, held, scores, seen, due):
        valid = held.valid
        counts = valid.sum(dim=-1)  # [b, h]
        cap = torch.tensor([[kvpress_kept(int(c), t) for c in row] for row, t in zip(counts.tolist(),
                            self.targets(seen))], device=valid.device).view_as(counts)
        cap = torch.where(due[:, None], cap, counts)
        order = scores.float().masked_fill(~valid, float("-inf")).argsort(dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                                .expand_as(order).contiguous())
        return valid & (rank < cap[..., None])

    def stated_nbytes(self, shape, lengths, layer_idx, n_layers, elt):
        """Nothing is evicted at prefill: keys + values of every padded slot, plus the float32 scores."""
        b, h, t, d = shape.batch, shape.kv_heads, shape.seq, shape.head_dim
        return b * h * t * (2 * d * elt + 4 * len(self.state_names))


def check_interval(value) -> None:
    check_int(value, "interval", 1)
