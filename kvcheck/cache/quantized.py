"""The quantised layer: packed blocks from a :class:`kvcheck.methods.QuantMethod` plus a
full-precision residual of the newest tokens."""
from __future__ import annotations

import torch

from .. import quant
from ..layer_api import HeldSlots
from ..work import region
from .layers import SharedSlots, tensor_nbytes


class QuantLayer(SharedSlots):
    """Quantised blocks (the method's packed tensors) + a full-precision residual of the newest tokens.

    Slot order is [quantised blocks..., residual]; ``valid``/``positions`` are ``[b, slots]`` (the same
    for every head). Every forward dequantises on the fly: nothing but codes, scales and the residual
    is held between steps.
    """

    def __init__(self, method, layer_idx: int, n_layers: int):
        super().__init__(method, layer_idx, n_layers)
        self.qk = self.qv = None  # packed keys / values of every quantised slot, or None
        self.n_quant = 0

    def update(self, key_states, value_states, positions=None, valid=None, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys, self.values = key_states, value_states
        else:
            self.keys = torch.cat([self.keys, key_states], dim=2)
            self.values = torch.cat([self.values, value_states], dim=2)
        self.append_slots(positions, valid, key_states.shape[1])
        if self.qk is None:
            return self.keys, self.values
        with region("method"):  # the method's decoding of its codes, every forward
            dk, dv = self.method.dequantize(self.qk, self.dtype), self.method.dequantize(self.qv, self.dtype)
        return torch.cat([dk, self.keys], dim=2), torch.cat([dv, self.values], dim=2)

    def get_seq_length(self) -> int:
        return self.n_quant + (0 if self.keys is None else self.keys.shape[2])

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

    def nbytes(self, float_bytes: int | None = None) -> int:
        held = 0 if self.qk is None else self.qk.nbytes() + self.qv.nbytes()
        return held + tensor_nbytes(self.keys, float_bytes) + tensor_nbytes(self.values, float_bytes)

    def held(self) -> HeldSlots:
        keys, values = self.keys, self.values
        if self.qk is not None:
            keys = torch.cat([self.method.dequantize(self.qk, keys.dtype), keys], dim=2)
            values = torch.cat([self.method.dequantize(self.qv, values.dtype), values], dim=2)
        valid, positions = self.slot_masks(keys.shape[1])
        return HeldSlots(keys, values, positions, valid)
