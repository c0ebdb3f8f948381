"""``threshold`` — evict tokens scoring below a threshold, outside a protected window (kvpress DMSPress).

kvpress's ``DMSPress`` (formerly ``ThresholdPress``; Łańcucki et al., 2025, "Inference-Time
Hyper-Scaling with KV Cache Compression", dense-prefill form, without the trained evictors).

Rule, per layer, sample and KV head: every token is scored once, when it arrives, by the per-token
``scorer`` (:data:`kvcheck.methods.variable.SCORERS`; ``knorm``: −‖k‖₂). The newest ``window``
tokens (true positions p ≥ seen − window, seen = the sample's highest position + 1) are never
evicted. At prefill, every older prompt token whose score is below ``threshold`` (strictly; the
comparison is in float32, the scores' dtype) is evicted. With ``decoding``, the same rule runs after
every forward while generating, so tokens are evicted as they leave the window; without it, generated
tokens and the prompt's last ``window`` tokens are all kept. How many tokens stay therefore varies
by sample, head and layer, and evicted slots are removed, not masked (kvpress masks them: same
attention, no memory freed).

Bytes per token per KV head held: ``2 × head_dim × element size``, plus 4 (the float32 score, kept
to evict later) with ``decoding``; each row is padded to the layer's longest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..layer_api import KeepPromise
from .base import check_int, register
from .variable import VariableEviction, check_bool, check_float, check_scorer


@register
@dataclass(frozen=True)
class Threshold(VariableEviction):
    name = "threshold"
    engine = "kvpress DMSPress(KnormPress(), threshold, sliding_window_size, decoding)"

    # the default: about the median post-RoPE key norm of the embedded default model (SmolLM2-135M-Instruct)
    # outside its first layer; thresholds are scorer- and model-specific, so declare yours
    threshold: float = field(default=-20.0, metadata={"short": "thr"})
    window: int = field(default=128, metadata={"short": "w"})
    decoding: bool = field(default=False, metadata={"short": "dec"})
    scorer: str = field(default="knorm", metadata={"short": "s"})

    def __post_init__(self):
        check_float(self.threshold, "threshold")
        check_int(self.window, "window", 0)
        check_bool(self.decoding, "decoding")
        check_scorer(self.scorer)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("score",) if self.decoding else ()

    @property
    def evicts_while_generating(self) -> bool:
        return self.decoding

    def promises(self) -> KeepPromise:
        return KeepPromise(recent=self.window)

    def due(self, prefill, seen, new, steps):
        return (new > 0) & (prefill or self.decoding)

    def keep(self, held, scores, seen, due):
        old = held.positions < (seen - self.window)[:, None, None]
        return ~(held.valid & old & (scores.float() < self.threshold) & due[:, None, None])
