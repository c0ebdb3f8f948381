"""The protocol between compression methods and the cache layers that hold their tokens.

Methods (``kvcheck.methods``) and the cache (``kvcheck.cache``) both import this module and never
each other: a method reads what a layer hands it (:class:`ScoreInputs` at prefill, a read-only
:class:`HeldSlots` view and its per-slot :data:`SlotState` while generating) and returns scores or
new state; the layer alone keeps, gathers and drops slots. What a method promises about its kept
set (:class:`KeepPromise`) and what a packed tensor promises about its round trip
(:meth:`Packed.error_bound`) are stated here too, so checks can read them without naming classes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

CACHE_KWARG = "kvcheck_cache"  # the keyword under which the model hands the cache to kvcheck's attention

SlotState = Mapping[str, torch.Tensor]
"""Per-slot method state: name → ``[batch, kv_heads, slots]`` tensor. The layer appends zeros for new
tokens and gathers it with the slots whenever it evicts; a method returns a new mapping, never
writes into the one it was given."""


@dataclass
class ScoreInputs:
    """What a scoring rule sees at prefill, for one layer.

    queries: ``[batch, q_heads, seq, head_dim]`` (after RoPE); keys/values: ``[batch, kv_heads, seq,
    head_dim]``; valid: ``[batch, seq]`` (False on left padding); positions: ``[batch, seq]`` true
    token positions.

    rope: the rotation the model applied to ``queries`` and ``keys`` (a :class:`kvcheck.methods.rope.Rope`),
    for rules that need queries before RoPE (:meth:`queries_pre_rope`) or cos/sin at positions not yet
    seen (``rope.cos_sin(positions, head_dim)``). The cache fills it for every eviction method, live
    and replayed; :data:`kvcheck.methods.rope.NO_ROPE` when the tensors carry no rotation; None only
    when built by hand without one (then :meth:`queries_pre_rope` raises).
    """

    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    scaling: float
    layer_idx: int
    n_layers: int
    rope: object | None = None  # a kvcheck.methods.rope.Rope

    def queries_pre_rope(self) -> torch.Tensor:
        """The queries as the model projected them, before RoPE: ``[batch, q_heads, seq, head_dim]``,
        float32, each rotated back from its true position (``rope.invert``). Padding rows are the
        padding's queries rotated back from the positions given to them: rules mask them out."""
        if self.rope is None:
            from .errors import KvcheckError

            raise KvcheckError("these ScoreInputs carry no rope: pass rope=kvcheck.methods.rope.NO_ROPE for "
                               "tensors without a rotation, or the model's (rope_of(the attention module)).")
        return self.rope.invert(self.queries, self.positions)

    @property
    def groups(self) -> int:
        return self.queries.shape[1] // self.keys.shape[1]

    def window_attention(self, window: int) -> torch.Tensor:
        """Softmax attention of the last ``window`` queries over all keys: ``[batch, q_heads, window, seq]``.

        Costs ``window × seq`` per head, never ``seq × seq``; the causal mask touches only the last
        ``window`` columns (the key padding mask, only when there is padding).
        """
        q = self.queries[:, :, -window:]
        b, hq, w, d = q.shape
        k = self.keys.repeat_interleave(self.groups, dim=1)
        logits = torch.matmul(q, k.transpose(-1, -2)).float().mul_(self.scaling)  # [b, hq, w, seq]
        t = k.shape[2]
        future = torch.ones(w, w, dtype=torch.bool, device=q.device).triu_(1)  # window query i is slot t − w + i
        logits[..., t - w:].masked_fill_(future, float("-inf"))
        if not bool(self.valid.all()):
            logits.masked_fill_(~self.valid[:, None, None, :], float("-inf"))
        return torch.softmax(logits, dim=-1)

    def per_kv_head(self, scores: torch.Tensor) -> torch.Tensor:
        """``[batch, q_heads, seq]`` → ``[batch, kv_heads, seq]`` by averaging each GQA group."""
        b, hq, t = scores.shape
        return scores.view(b, hq // self.groups, self.groups, t).mean(dim=2)


@dataclass(frozen=True)
class HeldSlots:
    """A read-only view of the slots a layer holds, as a method sees them while generating.

    keys/values ``[batch, kv_heads, slots, head_dim]`` (dequantised for quantised slots);
    positions/valid ``[batch, kv_heads, slots]``. The newest tokens occupy the last slots.
    """

    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    valid: torch.Tensor

    def newest(self, q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positions, valid)`` ``[batch, q]`` of the newest ``q`` tokens (the last ``q`` slots)."""
        return self.positions[:, 0, -q:], self.valid[:, 0, -q:]


@runtime_checkable
class Packed(Protocol):
    """A quantised block of keys or values, as a :class:`kvcheck.methods.QuantMethod` returns it."""

    def nbytes(self) -> int:
        """Bytes held (codes and every scale or zero-point)."""

    def cat(self, other):
        """This block followed by ``other`` along the token axis (axis 2)."""

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """The largest ``|dequantize(self) − x|`` each entry of ``x`` (the tensor packed) may show."""


@dataclass(frozen=True)
class KeepPromise:
    """Tokens an eviction method promises to keep (None: no such promise).

    - ``sinks``: the prompt's first ``min(sinks, prompt)`` tokens, once the prompt's budget holds them;
      with ``exact``, the kept set is exactly those sinks plus the newest tokens.
    - ``recent``: the ``min(recent, held)`` newest tokens seen.
    - ``window``: the prompt's last ``min(window, prompt)`` tokens (a prefill-only observation window)
      when the budget holds them, else kept prompt tokens come from that window only.
    """

    sinks: int | None = None
    recent: int | None = None
    window: int | None = None
    exact: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a method needs from its cache layer, derived from the method's type.

    ``kind``: the layer the cache builds (``custom``: the method builds its own with ``make_layer``);
    ``evicts_on_decode``: eviction continues while generating; ``slot_state``: names of the per-slot
    state the layer keeps; ``block``: tokens a quantised method quantises together.
    """

    kind: Literal["full", "eviction", "quant", "custom"]
    evicts_on_decode: bool = False
    slot_state: tuple[str, ...] = ()
    block: int | None = None
