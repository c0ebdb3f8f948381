"""The method API: a method is a frozen dataclass whose fields are its whole configuration.

Two extension steps, as in kvpress:
- :class:`EvictionMethod` subclasses implement ``score(inputs)`` → ``[batch, kv_heads, seq]`` (higher =
  keep). The cache keeps the ``budget`` best-scored tokens per KV head, in positional order.
- :class:`QuantMethod` subclasses implement ``quantize`` / ``dequantize`` of key and value blocks.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..errors import KvcheckError

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


def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)


@dataclass(frozen=True)
class Method:
    """Base of every method. Subclasses are frozen dataclasses and set ``name``."""

    name: ClassVar[str] = "method"
    acts_on_decode: ClassVar[bool] = False  # compresses while generating too (not only at prefill)

    @property
    def id(self) -> str:
        """Stable id: name + every parameter, filesystem-safe; keys the method's baselines."""
        parts = [self.name]
        for f in dataclasses.fields(self):
            parts.append(f"{f.metadata.get('short', f.name)}{_fmt(getattr(self, f.name))}")
        return "-".join(parts)

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"

    def make_layer(self, layer_idx: int, n_layers: int):
        raise NotImplementedError


def check_ratio(value, what: str = "compression_ratio") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value < 1:
        raise KvcheckError(f"{what} must be a number in [0, 1) (the share of tokens evicted), got {value!r}.")


def check_int(value, what: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise KvcheckError(f"{what} must be an integer >= {minimum}, got {value!r}.")


@dataclass
class ScoreInputs:
    """What a scoring rule sees at prefill, for one layer.

    queries: ``[batch, q_heads, seq, head_dim]`` (after RoPE); keys/values: ``[batch, kv_heads, seq,
    head_dim]``; valid: ``[batch, seq]`` (False on left padding); positions: ``[batch, seq]`` true
    token positions.
    """

    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    scaling: float
    layer_idx: int
    n_layers: int

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


def keep_count(n_tokens: int, ratio: float) -> int:
    """Tokens kept from ``n_tokens`` at ``ratio``: ``n - int(n * ratio)`` (ratio 0 keeps all)."""
    return n_tokens - int(n_tokens * ratio)


@dataclass(frozen=True)
class EvictionMethod(Method):
    """Keeps ``budget`` tokens per KV head; subclasses fill ``score``.

    ``stateful`` methods keep their prefill scores in ``layer.state["score"]`` (``[batch, kv_heads,
    slots]``, gathered with the slots on every eviction, zeros for new tokens) and update them in
    ``observe`` at every decode step, before any ``decode_scores``; the state's bytes count as held.
    """

    stateful: ClassVar[bool] = False

    compression_ratio: float = field(default=0.5, metadata={"short": "r"})

    def __post_init__(self):
        check_ratio(self.compression_ratio)

    def budget(self, n_tokens: int, layer_idx: int, n_layers: int) -> int:
        """Tokens this layer keeps out of a prompt of ``n_tokens`` (per KV head)."""
        return keep_count(n_tokens, self.compression_ratio)

    def score(self, inputs: ScoreInputs) -> torch.Tensor:
        """Per-token, per-KV-head keep scores ``[batch, kv_heads, seq]``; higher is kept first."""
        raise NotImplementedError

    def decode_scores(self, state, queries: torch.Tensor, scaling: float) -> torch.Tensor:
        """Keep scores of the held slots while generating (only for ``acts_on_decode`` methods).

        ``state`` is the :class:`kvcheck.cache.EvictionLayer` (new tokens already appended), ``queries``
        the new queries ``[batch, q_heads, q, head_dim]``; returns ``[batch, kv_heads, slots]``.
        """
        raise NotImplementedError

    def prefill_attention(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                          scaling: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Optional: the attention output ``[batch, seq, q_heads, head_dim]`` and :meth:`score`'s scores of
        an unpadded causal prefill, in one pass, for a rule whose scores need every query's attention
        weights anyway. ``None`` (the default) means: plain attention, then :meth:`score`."""
        return None

    def observe(self, state, queries: torch.Tensor, scaling: float) -> None:
        """Stateful methods: fold the new queries ``[batch, q_heads, q, head_dim]`` (the layer's last
        ``q`` slots) into the running scores in ``state.state``. Called at every decode step, before
        :meth:`decode_scores`, which then only ranks (it runs only when the cache is over budget)."""

    def make_layer(self, layer_idx: int, n_layers: int):
        from ..cache import EvictionLayer

        return EvictionLayer(self, layer_idx, n_layers)


@dataclass(frozen=True)
class QuantMethod(Method):
    """Stores keys and values as packed low-bit codes plus scales/zeros; subclasses fill the codec."""

    supported_bits: ClassVar[tuple[int, ...]] = (2, 4, 8)

    def check_bits(self, bits) -> None:
        if bits not in self.supported_bits:
            raise KvcheckError(f"{self.name}: bits must be one of {self.supported_bits}, got {bits!r}.")

    def quantize_keys(self, keys: torch.Tensor):
        raise NotImplementedError

    def quantize_values(self, values: torch.Tensor):
        raise NotImplementedError

    def dequantize(self, packed, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def make_layer(self, layer_idx: int, n_layers: int):
        from ..cache import QuantLayer

        return QuantLayer(self, layer_idx, n_layers)
