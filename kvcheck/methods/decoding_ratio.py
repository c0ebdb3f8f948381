"""``decoding_ratio`` — while generating, cut the cache to a share of all tokens seen (kvpress).

kvpress's ``CompressionRatioDecodingPress(KnormPress(), target_compression_ratio,
compression_interval)``.

Rule: :mod:`kvcheck.methods.decoding`'s, with the target recomputed at every decode forward from the
tokens the sample has seen (its highest real position + 1, as kvpress reads ``position_ids``):
``target = max(1, int(seen × (1 − target_ratio)))``, in double precision. kvpress takes the highest
position over the whole batch; here each sample uses its own, so a sample keeps the same tokens alone
or in a batch (kvpress itself runs one sample at a time).

Bytes per token per KV head held: ``2 × head_dim × element size`` + 4 (the float32 score); rows are
padded to the layer's longest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .base import check_ratio, register
from .variable import DecodeToTarget, check_interval, check_scorer


@register
@dataclass(frozen=True)
class DecodingRatio(DecodeToTarget):
    name = "decoding_ratio"
    engine = "kvpress CompressionRatioDecodingPress(KnormPress(), target_compression_ratio, compression_interval)"

    target_ratio: float = field(default=0.5, metadata={"short": "r"})
    interval: int = field(default=512, metadata={"short": "n"})
    scorer: str = field(default="knorm", metadata={"short": "s"})

    def __post_init__(self):
        check_ratio(self.target_ratio, "target_ratio")
        check_interval(self.interval)
        check_scorer(self.scorer)

    def target_size(self, seen: int) -> int:
        return max(1, int(seen * (1 - self.target_ratio)))
