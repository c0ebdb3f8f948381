"""CompressedCache: a transformers ``Cache`` whose layers really hold less.

Shapes follow transformers: keys and values are ``[batch, kv_heads, slots, head_dim]``. Each layer
also tracks, per slot, the token's true position and whether the slot holds a real token (``valid``:
False for left padding and for slots a sample does not need in a rectangular batch). The attention
function (``kvcheck.attention``) builds its mask from those, so RoPE positions and causality follow
the true positions whatever was evicted.

- :class:`EvictionLayer` keeps only the selected tokens (``full`` keeps all).
- :class:`QuantLayer` keeps bit-packed codes + float16 scales/zeros, and a full-precision residual.
"""
from __future__ import annotations

import time

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from . import quant
from .methods.base import ScoreInputs


def _nbytes(t: torch.Tensor | None, float_bytes: int | None) -> int:
    if t is None:
        return 0
    size = float_bytes if (float_bytes and t.is_floating_point() and t.dtype != quant.SCALE_DTYPE) else t.element_size()
    return t.numel() * size


def visibility(key_valid: torch.Tensor, key_pos: torch.Tensor, q_pos: torch.Tensor,
               q_valid: torch.Tensor) -> torch.Tensor:
    """Bool mask ``[batch, heads, q, slots]``: a query sees valid keys at its position or before.

    key_valid / key_pos: ``[batch, heads, slots]``; q_pos / q_valid: ``[batch, q]``. A padding query
    sees every slot (its output is discarded), so softmax never meets an all-masked row.
    """
    seen = key_valid[:, :, None, :] & (key_pos[:, :, None, :] <= q_pos[:, None, :, None])
    return seen | ~q_valid[:, None, :, None]


class _Layer(CacheLayerMixin):
    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__()
        self.method = method
        self.layer_idx = layer_idx
        self.n_layers = n_layers
        self.prefilled = False

    def lazy_initialization(self, key_states, value_states):
        self.device, self.dtype = key_states.device, key_states.dtype
        self.is_initialized = True

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def prefill_attention(self, query, key, value, scaling):
        """``(output, scores)`` when the method computes an unpadded prefill's attention together with
        its scores (see ``EvictionMethod.prefill_attention``); None: plain attention, then scoring."""
        return None

    def get_max_cache_shape(self) -> int:  # abstract in transformers 5.2 (later: get_max_length)
        return -1


class EvictionLayer(_Layer):
    """Holds the kept tokens only. ``method`` is an EvictionMethod, or None for the full cache.

    keys/values ``[b, h, n, d]``; valid/positions ``[b, h, n]``; ``seen`` ``[b]``: real tokens seen so
    far; ``budget`` ``[b]``: real tokens held per head, ``method.budget(seen)`` — applied at prefill,
    and after every step by ``acts_on_decode`` methods (so ratio 0 keeps everything).
    ``state`` holds per-slot method state (``[b, h, n]`` tensors) that moves with the slots.
    """

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        self.valid = self.positions = self.budget = self.seen = None
        self.state: dict[str, torch.Tensor] = {}
        self.last_kept: torch.Tensor | None = None  # slot positions kept at prefill, for inspection
        self.fused_scores: torch.Tensor | None = None  # prefill scores computed with the attention

    def update(self, key_states, value_states, positions=None, valid=None, **kwargs):
        b, h, q, _ = key_states.shape
        pos = positions[:, None, :].expand(b, h, q)
        val = valid[:, None, :].expand(b, h, q)
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys, self.values, self.positions, self.valid = key_states, value_states, pos, val
        else:
            self.keys = torch.cat([self.keys, key_states], dim=2)
            self.values = torch.cat([self.values, value_states], dim=2)
            self.positions = torch.cat([self.positions, pos], dim=2)
            self.valid = torch.cat([self.valid, val], dim=2)
            for name, t in self.state.items():
                self.state[name] = torch.cat([t, t.new_zeros(b, h, q)], dim=2)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def mask(self, q_pos, q_valid):
        return visibility(self.valid, self.positions, q_pos, q_valid)

    def _budget(self) -> torch.Tensor:
        """Real tokens each sample may hold: the method's budget of all tokens seen so far."""
        return torch.tensor([self.method.budget(n, self.layer_idx, self.n_layers) for n in self.seen.tolist()],
                            device=self.keys.device)

    def prefill_attention(self, query, key, value, scaling):
        n = key.shape[2]  # an unpadded prefill: every slot is a real token
        if self.method is None or self.prefilled or self.method.budget(n, self.layer_idx, self.n_layers) >= n:
            return None  # evicting nothing, the attention stays exactly the full cache's
        fused = self.method.prefill_attention(query, key, value, scaling)
        if fused is not None:
            self.fused_scores = fused[1]  # taken by after_forward instead of scoring again
        return fused

    def after_forward(self, queries: torch.Tensor, scaling: float) -> None:
        """Called by the attention function once this layer's attention is computed: compress at
        prefill (with the scores :meth:`prefill_attention` computed, if it did); while generating,
        ``acts_on_decode`` methods evict back to the budget."""
        scores, self.fused_scores = self.fused_scores, None
        if not self.prefilled:
            self.prefilled = True
            self.seen = self.valid[:, 0].sum(dim=-1)
            if self.method is None:
                return
            self.budget = self._budget()
            inputs = ScoreInputs(queries, self.keys, self.values, self.valid[:, 0], self.positions[:, 0],
                                 scaling, self.layer_idx, self.n_layers)
            if scores is None:
                scores = self.method.score(inputs)
            if self.method.stateful:  # running scores (e.g. H2O's accumulated attention) move with the slots
                self.state["score"] = scores.float()
                scores = self.method.decode_scores(self, queries, scaling)  # rank the raw state
            self.select(scores, self.budget, int(self.budget.max()))
            self.last_kept = self.positions.clone()
            return
        self.seen = self.seen + self.valid[:, 0, -queries.shape[2]:].sum(dim=-1)
        if self.method is not None and self.method.acts_on_decode:
            self.budget = self._budget()
            if self.method.stateful:  # running scores are updated at every step, ranked only to evict
                self.method.observe(self, queries, scaling)
            if bool((self.kept_counts()[:, 0] > self.budget).any()):
                scores = self.method.decode_scores(self, queries, scaling)
                self.select(scores, self.budget, min(self.keys.shape[2], int(self.budget.max())))

    def select(self, scores: torch.Tensor, cap: torch.Tensor, width: int) -> None:
        """Keep ``width`` slots per (sample, head): the ``cap[b]`` best-scored real tokens, in positional
        order, padded with invalid slots. Physically drops the rest."""
        if width == self.keys.shape[2] - 1 and self._drop_one(scores, cap):
            return
        s = scores.float().masked_fill(~self.valid, float("-inf"))
        order = s.argsort(dim=-1, descending=True, stable=True)[..., :width]
        keep_valid = torch.gather(self.valid, 2, order) & (
            torch.arange(width, device=s.device)[None, None, :] < cap[:, None, None])
        idx, perm = order.sort(dim=-1)
        self._take(idx, torch.gather(keep_valid, 2, perm))

    def _drop_one(self, scores: torch.Tensor, cap: torch.Tensor) -> bool:
        """:meth:`select` keeping all slots but one, when every slot is real, every sample keeps that
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

    def kept_counts(self) -> torch.Tensor:
        """Real tokens held per (sample, KV head): ``[b, h]``."""
        return self.valid.sum(dim=-1)

    def nbytes(self, float_bytes: int | None = None) -> int:
        return _nbytes(self.keys, float_bytes) + _nbytes(self.values, float_bytes) + sum(
            _nbytes(t, float_bytes) for t in self.state.values())


class QuantLayer(_Layer):
    """Quantised blocks (``QTensor`` lists) + a full-precision residual of the newest tokens.

    Slot order is [quantised blocks..., residual]; ``valid``/``positions`` are ``[b, slots]`` (the same
    for every head). Every forward dequantises on the fly: nothing but codes, scales and the residual
    is held between steps.
    """

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        self.qk = self.qv = None  # QTensor of every quantised slot (keys, values), or None
        self.valid = self.positions = None
        self.n_quant = 0

    def update(self, key_states, value_states, positions=None, valid=None, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys, self.values, self.positions, self.valid = key_states, value_states, positions, valid
        else:
            self.keys = torch.cat([self.keys, key_states], dim=2)
            self.values = torch.cat([self.values, value_states], dim=2)
            self.positions = torch.cat([self.positions, positions], dim=1)
            self.valid = torch.cat([self.valid, valid], dim=1)
        if self.qk is None:
            return self.keys, self.values
        k = torch.cat([self.method.dequantize(self.qk, self.dtype), self.keys], dim=2)
        v = torch.cat([self.method.dequantize(self.qv, self.dtype), self.values], dim=2)
        return k, v

    def get_seq_length(self) -> int:
        return self.n_quant + (0 if self.keys is None else self.keys.shape[2])

    def mask(self, q_pos, q_valid):
        return visibility(self.valid[:, None], self.positions[:, None], q_pos, q_valid)

    def after_forward(self, queries: torch.Tensor, scaling: float) -> None:
        """Flush the residual. At prefill everything but the newest ``residual`` slots is quantised (the
        oldest group partial); then, every ``block`` new tokens, everything but the newest ``residual``
        slots and the tokens since that boundary.

        Counted in slots from the end of the prompt, the rule is the same for a sample alone and for
        the same sample left-padded in a batch (a prompt shorter than ``residual`` counts as padded to
        it), so no sample's result depends on its neighbours.
        """
        block, keep = self.method.block, self.method.residual
        r = self.keys.shape[2]
        if not self.prefilled:
            self.prefilled, self.since = True, 0
            n = r - keep
        else:
            self.since += queries.shape[2]
            if self.since < block:
                return
            self.since %= block
            n = r - keep - self.since
        if n <= 0:
            return
        val = self.valid[:, self.n_quant:self.n_quant + n]
        self.qk = quant.cat(self.qk, self.method.quantize_keys(self.keys[:, :, :n], val))
        self.qv = quant.cat(self.qv, self.method.quantize_values(self.values[:, :, :n], val))
        self.n_quant += n
        self.keys, self.values = self.keys[:, :, n:], self.values[:, :, n:]

    def kept_counts(self) -> torch.Tensor:
        b = self.valid.shape[0]
        h = self.keys.shape[1]
        return self.valid.sum(dim=-1)[:, None].expand(b, h)

    def nbytes(self, float_bytes: int | None = None) -> int:
        held = 0 if self.qk is None else self.qk.nbytes() + self.qv.nbytes()
        return held + _nbytes(self.keys, float_bytes) + _nbytes(self.values, float_bytes)


class CompressedCache(Cache):
    """One compression method applied to every layer of a model, through the public Cache API.

    The engine calls :meth:`begin` before each forward with the true positions and validity of the
    new tokens; the model then calls :meth:`update` per layer as usual.
    """

    def __init__(self, method, n_layers: int):
        super().__init__(layers=[method.make_layer(i, n_layers) for i in range(n_layers)])
        self.method = method
        self.query_positions = self.query_valid = None
        self.recorded: dict[int, torch.Tensor] | None = None  # layer → attention output, when recording
        self.captured_queries: dict[int, torch.Tensor] | None = None  # layer → queries, when capturing
        self.time_compression = False  # when True, seconds spent compressing add up in compress_s
        self.clock = time.perf_counter  # what compress_s is read from (bench may pass process CPU time)
        self.compress_s = 0.0

    def begin(self, positions: torch.Tensor, valid: torch.Tensor) -> None:
        self.query_positions, self.query_valid = positions, valid.bool()

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return self.layers[layer_idx].update(key_states, value_states, self.query_positions, self.query_valid)

    def kv_bytes(self, float_bytes: int | None = None) -> int:
        """Bytes held by every layer. ``float_bytes`` counts floating tensors at that many bytes per
        element (2 = the fp16-equivalent figure) instead of their real element size."""
        return sum(layer.nbytes(float_bytes) for layer in self.layers)

    def kept_counts(self) -> list[torch.Tensor]:
        return [layer.kept_counts() for layer in self.layers]
