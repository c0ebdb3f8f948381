"""``decoding`` — while generating, cut the cache to a fixed size every few steps (kvpress DecodingPress).

kvpress's ``DecodingPress`` over a per-token scorer (``DecodingPress(KnormPress(),
compression_interval, target_size)``).

Rule, per layer and sample: the prompt is kept whole. Every decode forward that brings the sample
real tokens counts one step; when the count reaches ``interval``, or when one forward brings at least
``target`` real tokens (a teacher-forced chunk), the sample compresses and its count restarts at 0:
each KV head keeps its ``target`` best-scored held tokens (all of them when it holds no more; the
exact count is kvpress's, :func:`kvcheck.methods.variable.kvpress_kept`, which is ``target`` for any
cache up to 2²⁰ tokens), in positional order, and the rest are removed. Scores come from the
per-token ``scorer`` (``knorm``: −‖k‖₂), computed once per token when it arrives; equal scores keep
the earlier slot. Nothing is protected (no sinks, no window), as with kvpress's KnormPress. Generating
one token per forward, the cache holds the prompt, grows by ``interval`` tokens, drops to ``target``
(when it held more), and from then on swings between ``target`` and ``target + interval``.

kvpress buffers the last ``hidden_states_buffer_size`` hidden states for scorers that read them; the
per-token scorers here read keys or positions only, so there is no buffer.

Bytes per token per KV head held: ``2 × head_dim × element size`` + 4 (the float32 score); rows are
padded to the layer's longest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .base import check_int, register
from .variable import DecodeToTarget, check_interval, check_scorer


@register
@dataclass(frozen=True)
class Decoding(DecodeToTarget):
    name = "decoding"
    engine = "kvpress DecodingPress(KnormPress(), compression_interval, target_size)"

    target: int = field(default=2048, metadata={"short": "t"})
    interval: int = field(default=512, metadata={"short": "n"})
    scorer: str = field(default="knorm", metadata={"short": "s"})

    def __post_init__(self):
        check_int(self.target, "target", 1)
        check_interval(self.interval)
        check_scorer(self.scorer)

    def target_size(self, seen: int) -> int:
        return self.target
