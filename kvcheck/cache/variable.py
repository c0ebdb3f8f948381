"""The layer of variable-count eviction methods (:class:`kvcheck.methods.variable.VariableEviction`,
capability kind ``"variable"``): each (sample, KV head) keeps the slots the method's ``keep`` says,
however many, and the rest are removed; rows are padded with invalid slots to the longest.

After the prefill and, for a method that evicts while generating, after every decode forward, the
layer scores the forward's tokens once (``method.score`` over those tokens only), keeps the scores as
the per-slot state ``"score"`` when the method asks for it (NaN stands for older scores it does not
keep), advances each sample's step counter, asks ``method.due`` which samples compress and, for
those, ``method.keep`` which held slots stay. A prefill-only method does nothing while generating.
"""
from __future__ import annotations

import torch

from ..layer_api import ScoreInputs
from .eviction import EvictionLayer


class VariableLayer(EvictionLayer):
    """keys/values ``[b, h, n, d]``, valid/positions ``[b, h, n]``; ``seen`` ``[b]``: each sample's
    highest real position + 1; ``steps`` ``[b]``: decode forwards with real tokens since its last
    compression; ``state["score"]`` ``[b, h, n]`` (float32) when the method keeps scores."""

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        caps = method.capabilities
        self.keeps_scores, self.evicts_on_decode = "score" in caps.slot_state, caps.evicts_on_decode
        self.steps = None

    def prefill_attention(self, query, key, value, scaling):
        return None  # plain attention, then scoring

    def after_forward(self, queries: torch.Tensor, scaling: float) -> None:
        q = queries.shape[2]
        prefill = not self.prefilled
        if not prefill and not self.evicts_on_decode:
            return  # prefill only: generated tokens are all kept
        self.prefilled = True
        new_valid, new_pos = self.valid[:, 0, -q:], self.positions[:, 0, -q:]
        inputs = ScoreInputs(queries=queries, keys=self.keys[:, :, -q:], values=self.values[:, :, -q:],
                             valid=new_valid, positions=new_pos, scaling=scaling, layer_idx=self.layer_idx,
                             n_layers=self.n_layers)
        scores = self.method.score(inputs).float()
        if prefill or not self.keeps_scores:
            self.state = {"score": scores if prefill else self._unknown_before(scores)}
        else:  # the layer appended zeros for the new slots: put their scores there
            self.state = {"score": torch.cat([self.state["score"][..., :-q], scores], dim=-1)}
        top = new_pos.masked_fill(~new_valid, -1).amax(dim=-1) + 1
        new = new_valid.sum(dim=-1)
        if prefill:
            self.seen, self.steps = top, torch.zeros_like(new)
        else:
            self.seen = torch.maximum(self.seen, top)
            self.steps = self.steps + (new > 0).long()
        due = self.method.due(prefill, self.seen, new, self.steps)
        if bool(due.any()):
            self.keep_slots(self.method.keep(self.held(), self.state["score"], self.seen, due) & self.valid)
            self.steps = self.steps.masked_fill(due, 0)
        if prefill:
            self.last_kept = self.positions.clone()
        if not self.keeps_scores:
            self.state = {}

    def _unknown_before(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` of the newest slots after NaN for every older slot (scores not kept)."""
        b, h, q = scores.shape
        return torch.cat([scores.new_full((b, h, self.keys.shape[2] - q), float("nan")), scores], dim=-1)

    def keep_slots(self, keep: torch.Tensor) -> None:
        """Keep the slots where ``keep`` ``[b, h, n]`` is True, in slot order, padding each row with
        invalid slots to the longest; removes the rest (nothing when every slot stays)."""
        if bool(keep.all()):
            return
        width = int(keep.sum(dim=-1).max())
        order = (~keep).to(torch.uint8).argsort(dim=-1, stable=True)[..., :width]  # kept slots first
        idx, perm = order.sort(dim=-1)
        self._take(idx, torch.gather(torch.gather(keep, 2, order), 2, perm))

    def over_budget(self) -> bool:
        return False  # no budget: the method's rule decides
