"""The method API: a method is a frozen dataclass whose fields are its whole configuration.

A method subclasses one of the base types below and fills in its rule; the type alone tells the cache
which layer to build (:attr:`Method.capabilities`), and no method imports the cache (the shared
protocol types live in :mod:`kvcheck.layer_api`):

- :class:`EvictionMethod`: ``score(inputs)`` → ``[batch, kv_heads, seq]`` (higher = keep) at prefill.
  The cache keeps the ``budget`` best-scored tokens per KV head, in positional order.
- :class:`DecodeEviction`: an eviction method that keeps evicting while generating
  (``decode_scores``); :class:`StatefulEviction` also keeps per-slot state (``initial_state``,
  ``observe``), which the cache gathers with the slots.
- :class:`QuantMethod`: ``quantize_keys`` / ``quantize_values`` / ``dequantize`` of key and value
  blocks, with the ``block`` and ``residual`` it quantises by.
- Any other :class:`Method` builds its own cache layer in ``make_layer`` (adapters do).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import KvcheckError
from ..layer_api import Capabilities, HeldSlots, KeepPromise, Packed, ScoreInputs, SlotState

REGISTRY: dict[str, type["Method"]] = {}


def register(cls):
    """Class decorator: add a method class to the registry under ``cls.name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise KvcheckError(f"method name {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


def get_method_class(name: str) -> type["Method"]:
    if name not in REGISTRY:
        raise KvcheckError(f"unknown method {name!r}; known methods: {', '.join(sorted(REGISTRY))} "
                           "(`kvcheck methods` lists them with their parameters).")
    return REGISTRY[name]


def format_value(v) -> str:
    """A parameter value as it appears in a method id (floats rounded to 6 digits)."""
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)


_fmt = format_value  # the former private name
_FLAGS = ("acts_on_decode", "stateful")  # replaced by the method's base type


@dataclass(frozen=True)
class Method:
    """Base of every method. Subclasses are frozen dataclasses and set ``name``."""

    name: ClassVar[str] = "method"
    # the serving-engine setting the method mirrors (e.g. "vLLM --kv-cache-dtype fp8"); "" when none
    engine: ClassVar[str] = ""
    layer_kind: ClassVar[str] = "custom"  # set by the base types below; "custom" builds its own layer

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for flag in _FLAGS:
            if flag in cls.__dict__:
                raise KvcheckError(f"{cls.__name__} sets {flag!r}, which is now given by the base class: subclass "
                                   "DecodeEviction (evicts while generating) or StatefulEviction (also keeps "
                                   "per-slot state) instead.")

    @property
    def id(self) -> str:
        """Stable id: name + every parameter, filesystem-safe; keys the method's baselines."""
        parts = [self.name]
        for f in dataclasses.fields(self):
            parts.append(f"{f.metadata.get('short', f.name)}{format_value(getattr(self, f.name))}")
        return "-".join(parts)

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"

    @property
    def capabilities(self) -> Capabilities:
        """What the method needs from its cache layer, derived from its type."""
        return Capabilities(self.layer_kind)

    @property
    def acts_on_decode(self) -> bool:
        """Deprecated: ``capabilities.evicts_on_decode`` (a :class:`DecodeEviction`)."""
        return self.capabilities.evicts_on_decode

    @property
    def stateful(self) -> bool:
        """Deprecated: ``bool(capabilities.slot_state)`` (a :class:`StatefulEviction`)."""
        return bool(self.capabilities.slot_state)

    def promises(self) -> KeepPromise:
        """Tokens the method promises to keep, whatever their scores (none by default)."""
        return KeepPromise()

    def stated_nbytes(self, shape, lengths: list[int], layer_idx: int, n_layers: int, elt: int) -> int | None:
        """Bytes one layer holds after the prefill of a left-padded batch, by the method's stated layout:
        ``shape`` a :class:`kvcheck.strategies.CacheShape`, ``lengths`` each sample's real tokens,
        ``elt`` bytes per key/value element. None: the method states no layout."""
        return None

    def make_layer(self, layer_idx: int, n_layers: int):
        """The cache layer of a ``custom`` method (one that is none of the base types below)."""
        raise NotImplementedError(f"{type(self).__name__} is no eviction or quantised method, so it must build "
                                  "its own cache layer in make_layer (a kvcheck.cache.SlotLayer).")


def check_ratio(value, what: str = "compression_ratio") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value < 1:
        raise KvcheckError(f"{what} must be a number in [0, 1) (the share of tokens evicted), got {value!r}.")


def check_int(value, what: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise KvcheckError(f"{what} must be an integer >= {minimum}, got {value!r}.")


def keep_count(n_tokens: int, ratio: float) -> int:
    """Tokens kept from ``n_tokens`` at ``ratio``: ``n - int(n * ratio)`` (ratio 0 keeps all)."""
    return n_tokens - int(n_tokens * ratio)


@dataclass(frozen=True)
class EvictionMethod(Method):
    """Keeps ``budget`` tokens per KV head, chosen at prefill by ``score``; new tokens are all kept.

    Subclass :class:`DecodeEviction` to keep evicting while generating.
    """

    layer_kind: ClassVar[str] = "eviction"

    compression_ratio: float = field(default=0.5, metadata={"short": "r"})

    def __post_init__(self):
        check_ratio(self.compression_ratio)

    def budget(self, n_tokens: int, layer_idx: int, n_layers: int) -> int:
        """Tokens this layer keeps out of a prompt of ``n_tokens`` (per KV head)."""
        return keep_count(n_tokens, self.compression_ratio)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        """Per-token, per-KV-head keep scores ``[batch, kv_heads, seq]``; higher is kept first."""
        raise NotImplementedError

    def prefill_attention(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                          scaling: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Optional: the attention output ``[batch, seq, q_heads, head_dim]`` and :meth:`score`'s scores of
        an unpadded causal prefill, in one pass, for a rule whose scores need every query's attention
        weights anyway. ``None`` (the default) means: plain attention, then :meth:`score`."""
        return None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.layer_kind, evicts_on_decode=isinstance(self, DecodeEviction),
                            slot_state=self.state_names if isinstance(self, StatefulEviction) else ())

    def stated_nbytes(self, shape, lengths: list[int], layer_idx: int, n_layers: int, elt: int) -> int | None:
        """Keys + values of ``width`` slots per (sample, head), width = the largest per-sample budget, plus
        float32 per-slot state."""
        b, h, d = shape.batch, shape.kv_heads, shape.head_dim
        width = max(self.budget(n, layer_idx, n_layers) for n in lengths)
        state = sum(b * h * width * 4 for _ in self.capabilities.slot_state)
        return 2 * b * h * width * d * elt + state


@dataclass(frozen=True)
class DecodeEviction(EvictionMethod):
    """An eviction method that also evicts while generating: after every step, whenever the cache holds
    more than ``budget`` of all tokens seen so far, the lowest-ranked held slots go."""

    def decode_scores(self, held: HeldSlots, queries: torch.Tensor, scaling: float,
                      state: SlotState) -> torch.Tensor:
        """Keep scores ``[batch, kv_heads, slots]`` of the held slots while generating.

        ``held``: the layer's slots, new tokens already appended (the last ``q`` slots); ``queries`` the
        new queries ``[batch, q_heads, q, head_dim]``; ``state``: the per-slot state (empty unless a
        :class:`StatefulEviction`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class StatefulEviction(DecodeEviction):
    """A decode-time eviction method with per-slot state (``state_names``, each ``[batch, kv_heads,
    slots]``): the cache starts it from the prefill scores (:meth:`initial_state`), appends zeros for
    new tokens, gathers it with the slots, counts its bytes as held, and replaces it with what
    :meth:`observe` returns at every decode step (before any :meth:`decode_scores`, which then only
    ranks). At prefill the kept set is ranked by ``decode_scores`` over the initial state."""

    state_names: ClassVar[tuple[str, ...]] = ("score",)

    def initial_state(self, prefill_scores: torch.Tensor) -> SlotState:
        """The state after prefill, from :meth:`score`'s ``[batch, kv_heads, seq]`` scores."""
        return {"score": prefill_scores.float()}

    def observe(self, held: HeldSlots, queries: torch.Tensor, scaling: float, state: SlotState) -> SlotState:
        """The state once the new queries ``[batch, q_heads, q, head_dim]`` (the last ``q`` held slots)
        are folded in; returns a new mapping with the same names, never mutates ``state``."""
        raise NotImplementedError


class _Required:
    """A value every concrete subclass supplies: as a dataclass field, a class attribute or a property."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        raise NotImplementedError(f"{type(obj).__name__} must define {self.name!r}")


@dataclass(frozen=True)
class QuantMethod(Method):
    """Stores keys and values as packed low-bit codes plus scales/zeros; subclasses fill the codec.

    The cache quantises everything but the newest ``residual`` slots at prefill, then every ``block``
    new tokens everything but the newest ``residual`` and those since the last boundary.
    ``block`` and ``residual`` are declared here and supplied by each subclass (a field, a class
    attribute or a property; never a field here: fields in declaration order make the method id).
    """

    layer_kind: ClassVar[str] = "quant"
    supported_bits: ClassVar[tuple[int, ...]] = (2, 4, 8)

    block = _Required()  # tokens quantised together
    residual = _Required()  # newest tokens kept at full precision

    def check_bits(self, bits) -> None:
        if bits not in self.supported_bits:
            raise KvcheckError(f"{self.name}: bits must be one of {self.supported_bits}, got {bits!r}.")

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.layer_kind, block=self.block)

    def quantize_keys(self, keys: torch.Tensor, valid: torch.Tensor) -> Packed:
        """keys ``[batch, kv_heads, n, head_dim]``, valid ``[batch, n]`` (False on left padding)."""
        raise NotImplementedError

    def quantize_values(self, values: torch.Tensor, valid: torch.Tensor) -> Packed:
        """values ``[batch, kv_heads, n, head_dim]``, valid ``[batch, n]``."""
        raise NotImplementedError

    def dequantize(self, packed: Packed, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def quantized_nbytes(self, batch: int, heads: int, tokens: int, head_dim: int) -> int | None:
        """Bytes ``tokens`` quantised slots of keys and values hold (None: no stated layout)."""
        return None

    def quantizes_layer(self, layer_idx: int, n_layers: int) -> bool:
        """Whether layer ``layer_idx`` of ``n_layers`` is quantised; False: the cache keeps it at full
        precision (a plain full layer). True for every layer unless a method says otherwise."""
        return True

    def stated_nbytes(self, shape, lengths: list[int], layer_idx: int, n_layers: int, elt: int) -> int | None:
        """``max(0, t − residual)`` slots quantised (t the padded length), the rest full precision; every
        slot full precision in a layer the method does not quantise (:meth:`quantizes_layer`)."""
        b, h, t, d = shape.batch, shape.kv_heads, shape.seq, shape.head_dim
        if not self.quantizes_layer(layer_idx, n_layers):
            return 2 * b * h * t * d * elt
        nq = t - self.residual if t > self.residual else 0
        packed = self.quantized_nbytes(b, h, nq, d)
        if packed is None:
            return None
        return 2 * b * h * (t - nq) * d * elt + packed
