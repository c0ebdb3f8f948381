"""Eviction layers: hold only the tokens a :class:`kvcheck.methods.EvictionMethod` keeps.

- :class:`EvictionLayer`: compresses at prefill; generated tokens are all kept.
- :class:`DecodeEvictionLayer` (a ``DecodeEviction`` method): also evicts back to the budget after
  every step, ranking the held slots with ``decode_scores``.
- :class:`StatefulEvictionLayer` (a ``StatefulEviction`` method): keeps the method's per-slot state,
  appends zeros for new tokens, gathers it with the slots and replaces it with what ``observe``
  returns at every step.

The keep step (:meth:`EvictionLayer.select`) takes a keep count per sample or per (sample, KV head),
so a rule whose counts vary by row or head needs no other change here.
"""
from __future__ import annotations

import torch

from ..layer_api import ScoreInputs, SlotState
from .layers import PerHeadSlots, tensor_nbytes


class EvictionLayer(PerHeadSlots):
    """Holds the kept tokens only.

    keys/values ``[b, h, n, d]``; valid/positions ``[b, h, n]``; ``seen`` ``[b]``: real tokens seen so
    far; ``budget`` ``[b]``: real tokens held per head, ``method.budget(seen)``, applied at prefill
    (and after every step by :class:`DecodeEvictionLayer`; ratio 0 keeps everything). ``state`` holds
    per-slot method state (``[b, h, n]`` tensors) that moves with the slots.
    """

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        self.budget = self.seen = None
        self.state: dict[str, torch.Tensor] = {}
        self.last_kept: torch.Tensor | None = None  # slot positions kept at prefill, for inspection
        self.fused_scores: torch.Tensor | None = None  # prefill scores computed with the attention
        # the model's rotation of queries and keys (kvcheck.methods.rope.Rope), handed on in ScoreInputs;
        # set before the prefill's after_forward by kvcheck's attention function and by engine.replay
        self.rope = None

    def update(self, key_states, value_states, positions=None, valid=None, **kwargs):
        appending = self.is_initialized
        out = super().update(key_states, value_states, positions, valid)
        if appending:
            b, h, q, _ = key_states.shape
            for name, t in self.state.items():
                self.state[name] = torch.cat([t, t.new_zeros(b, h, q)], dim=2)
        return out

    def _budget(self) -> torch.Tensor:
        """Real tokens each sample may hold: the method's budget of all tokens seen so far."""
        return torch.tensor([self.method.budget(n, self.layer_idx, self.n_layers) for n in self.seen.tolist()],
                            device=self.keys.device)

    def prefill_attention(self, query, key, value, scaling):
        n = key.shape[2]  # an unpadded prefill: every slot is a real token
        if self.prefilled or self.method.budget(n, self.layer_idx, self.n_layers) >= n:
            return None  # evicting nothing, the attention stays exactly the full cache's
        fused = self.method.prefill_attention(query, key, value, scaling)
        if fused is not None:
            self.fused_scores = fused[1]  # taken by after_forward instead of scoring again
        return fused

    def after_forward(self, queries: torch.Tensor, scaling: float) -> None:
        """Called by the attention function once this layer's attention is computed: compress at
        prefill (with the scores :meth:`prefill_attention` computed, if it did); while generating,
        :meth:`decode_step`."""
        scores, self.fused_scores = self.fused_scores, None
        if not self.prefilled:
            self.prefilled = True
            self.seen = self.valid[:, 0].sum(dim=-1)
            self.budget = self._budget()
            inputs = ScoreInputs(queries, self.keys, self.values, self.valid[:, 0], self.positions[:, 0],
                                 scaling, self.layer_idx, self.n_layers, rope=self.rope)
            if scores is None:
                scores = self.method.score(inputs)
            scores = self.prefill_ranking(scores, queries, scaling)
            self.select(scores, self.budget, int(self.budget.max()))
            self.last_kept = self.positions.clone()
            return
        self.seen = self.seen + self.valid[:, 0, -queries.shape[2]:].sum(dim=-1)
        self.decode_step(queries, scaling)

    def prefill_ranking(self, scores: torch.Tensor, queries: torch.Tensor, scaling: float) -> torch.Tensor:
        """The ranking the prompt is cut by: the method's scores."""
        return scores

    def decode_step(self, queries: torch.Tensor, scaling: float) -> None:
        """After a decode step: nothing (generated tokens are all kept)."""

    def select(self, scores: torch.Tensor, cap: torch.Tensor, width: int) -> None:
        """Keep ``width`` slots per (sample, head): the ``cap`` best-scored real tokens, in positional
        order, padded with invalid slots. Physically drops the rest. ``cap``: ``[b]`` (one count per
        sample) or ``[b, h]`` (per KV head); ``width`` ≥ every count."""
        if width == self.keys.shape[2] - 1 and self._drop_one(scores, cap):
            return
        s = scores.float().masked_fill(~self.valid, float("-inf"))
        order = s.argsort(dim=-1, descending=True, stable=True)[..., :width]
        keep_valid = torch.gather(self.valid, 2, order) & (
            torch.arange(width, device=s.device)[None, None, :] < cap.view(cap.shape[0], -1, 1))
        idx, perm = order.sort(dim=-1)
        self._take(idx, torch.gather(keep_valid, 2, perm))

    def _drop_one(self, scores: torch.Tensor, cap: torch.Tensor) -> bool:
        """:meth:`select` keeping all slots but one, when every slot is real, every row keeps that
        many and no score is NaN (a decode step): drop each row's lowest-scored slot — the last of
        equal lowest, as the stable ranking does — without sorting. Returns False, changing nothing,
        when those conditions do not hold."""
        n = scores.shape[-1]
        s = scores.float()
        low = s.amin(dim=-1, keepdim=True)
        if not bool((cap == n - 1).all() & self.valid.all() & ~low.isnan().any()):
            return False
        slots = torch.arange(n, device=s.device)
        drop = torch.where(s == low, slots, -1).amax(dim=-1, keepdim=True)  # [b, h, 1]
        kept = slots[:n - 1]
        self._take(kept + (kept >= drop), self.valid[..., :n - 1])
        return True

    def _take(self, idx: torch.Tensor, valid: torch.Tensor) -> None:
        """Keep slots ``idx`` ``[b, h, w]`` (ascending) of every per-slot tensor; ``valid`` is their
        validity after the cut. Whole rows are copied with ``index_select`` on flattened tensors (on
        CPU about ten times faster than an element-wise ``gather``; the values are the same)."""
        b, h, n, _ = self.keys.shape
        w = idx.shape[-1]
        rows = (idx + torch.arange(0, b * h * n, n, device=idx.device).view(b, h, 1)).view(-1)

        def take(t: torch.Tensor) -> torch.Tensor:  # [b, h, n, ...] → [b, h, w, ...]
            return t.reshape(b * h * n, *t.shape[3:]).index_select(0, rows).view(b, h, w, *t.shape[3:])

        self.keys, self.values, self.positions = take(self.keys), take(self.values), take(self.positions)
        self.valid = valid
        for name, t in self.state.items():
            self.state[name] = take(t)

    def over_budget(self) -> bool:
        """Whether any (sample, head) holds more real tokens than its budget."""
        counts = self.kept_counts()
        return bool((counts > self.budget.view(counts.shape[0], -1)).any())

    def nbytes(self, float_bytes: int | None = None) -> int:
        return super().nbytes(float_bytes) + sum(tensor_nbytes(t, float_bytes) for t in self.state.values())


class DecodeEvictionLayer(EvictionLayer):
    """Evicts back to the budget of all tokens seen after every decode step, ranked by the method's
    ``decode_scores`` over the held slots."""

    def decode_step(self, queries: torch.Tensor, scaling: float) -> None:
        self.budget = self._budget()
        self.update_state(queries, scaling)
        if self.over_budget():
            scores = self.method.decode_scores(self.held(), queries, scaling, self.state)
            self.select(scores, self.budget, min(self.keys.shape[2], int(self.budget.max())))

    def update_state(self, queries: torch.Tensor, scaling: float) -> None:
        """Fold the new queries into the per-slot state (none here)."""


class StatefulEvictionLayer(DecodeEvictionLayer):
    """Keeps the method's per-slot state: started from the prefill scores, updated at every step
    (running scores are updated at every step, ranked only to evict)."""

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        self.state_names = set(method.capabilities.slot_state)

    def prefill_ranking(self, scores: torch.Tensor, queries: torch.Tensor, scaling: float) -> torch.Tensor:
        self.state = self._checked(self.method.initial_state(scores))
        return self.method.decode_scores(self.held(), queries, scaling, self.state)  # rank the raw state

    def update_state(self, queries: torch.Tensor, scaling: float) -> None:
        self.state = self._checked(self.method.observe(self.held(), queries, scaling, self.state))

    def _checked(self, state: SlotState) -> dict[str, torch.Tensor]:
        if set(state) != self.state_names:
            raise TypeError(f"{type(self.method).__name__} returned state {sorted(state)}, "
                            f"declared {sorted(self.state_names)}")
        return dict(state)
