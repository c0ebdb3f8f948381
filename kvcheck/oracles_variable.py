"""What a variable-count eviction layer must keep, computed independently of it: pure functions of one
(sample, KV head)'s per-token scores, the method's settings and the forwards that brought the tokens.

They follow kvpress's own mechanics step by step, not kvcheck's vectorised rule: :func:`dms_kept`
replays DMSPress's score buffer (``presses/dms_press.py:69-130``), :func:`decoding_kept` replays
DecodingPress's step counter and top-k (``presses/decoding_press.py:113-178``), with the cut taken as
the spec states it (``min(held, target)``) rather than through the ratio bisection. Scores are lists
indexed by true position (the prompt's tokens, then each chunk's); kept sets come back as sorted
positions. Ties between equal scores go to the earlier position (kvpress's ``topk`` leaves their
order unspecified)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .methods.variable import SCORERS


def float32(x: float) -> float:
    """``x`` rounded to float32, as torch rounds a Python float compared with a float32 tensor."""
    return float(np.float32(x))


def dms_kept(scores: Sequence[float], prompt: int, chunks: Sequence[int], threshold: float, window: int,
             decoding: bool) -> list[int]:
    """DMSPress: the prompt's scores fill a buffer; once it holds more than ``window`` entries, the
    oldest leave it, and those scoring below ``threshold`` are evicted for good. With ``decoding``,
    each chunk's scores join the buffer the same way; without it, chunks are never scored."""
    thr = float32(threshold)
    buffer: list[int] = []
    evicted: set[int] = set()

    def push(positions: range) -> None:
        buffer.extend(positions)
        if len(buffer) > window:
            leaving = buffer[:len(buffer) - window]
            del buffer[:len(buffer) - window]
            evicted.update(p for p in leaving if scores[p] < thr)

    push(range(prompt))
    seen = prompt
    for c in chunks:
        if decoding:
            push(range(seen, seen + c))
        seen += c
    return [p for p in range(seen) if p not in evicted]


def decoding_kept(scores: Sequence[float], prompt: int, chunks: Sequence[int], interval: int,
                  target: Callable[[int], int]) -> list[int]:
    """DecodingPress: the prompt is kept whole; each chunk is one step; when the steps reach
    ``interval`` or a chunk brings at least ``target(seen)`` tokens, the held tokens are cut to the
    ``min(held, target(seen))`` best-scored and the count restarts."""
    held, seen, steps = list(range(prompt)), prompt, 0
    for c in chunks:
        held += range(seen, seen + c)
        seen, steps = seen + c, steps + 1
        t = target(seen)
        if steps >= interval or c >= t:
            best = sorted(held, key=lambda p: (-scores[p], p))[:min(len(held), t)]
            held, steps = sorted(best), 0
    return held


def fixed_target(size: int) -> Callable[[int], int]:
    """DecodingPress's target: ``size`` whatever was seen."""
    return lambda seen: size


def ratio_target(ratio: float) -> Callable[[int], int]:
    """CompressionRatioDecodingPress's target: ``max(1, int(seen·(1 − ratio)))``."""
    return lambda seen: max(1, int(seen * (1 - ratio)))


def expected_kept(method, scores: Sequence[float], prompt: int, chunks: Sequence[int]) -> list[int]:
    """The kept positions of one (sample, KV head) of a ``threshold``, ``decoding`` or
    ``decoding_ratio`` method, by the replays above (read through the method's fields)."""
    if method.name == "threshold":
        return dms_kept(scores, prompt, chunks, method.threshold, method.window, method.decoding)
    if method.name == "decoding":
        return decoding_kept(scores, prompt, chunks, method.interval, fixed_target(method.target))
    if method.name == "decoding_ratio":
        return decoding_kept(scores, prompt, chunks, method.interval, ratio_target(method.target_ratio))
    raise ValueError(f"no variable-eviction oracle for {method.name!r}")


def token_scores(scorer: str, keys, positions, layer_idx: int) -> list[list[float]]:
    """Per KV head, the scores of one sample's tokens ``keys`` ``[kv_heads, n, head_dim]`` at true
    ``positions`` ``[n]``, by the named scorer's rule stated here: ``knorm`` −‖k‖₂ (float32);
    ``random`` draws ``torch.rand(max position + 1, kv_heads)`` from a CPU generator seeded with
    ``layer_idx`` (seed 0 × 1_000_003 + layer) and reads row ``p`` for position ``p``."""
    import torch

    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}")
    if scorer == "knorm":
        return (-keys.float().norm(dim=-1)).tolist()
    gen = torch.Generator().manual_seed(layer_idx)
    draws = torch.rand(int(positions.max()) + 1, keys.shape[0], generator=gen)
    return draws[positions].T.tolist()


def layer_bytes(counts: Sequence[Sequence[int]], head_dim: int, elt: int, state: int) -> int:
    """Bytes a variable layer holds once its rows are cut to ``counts`` (``[batch][kv_heads]`` real
    tokens): every row padded to the longest, ``2·head_dim·elt`` bytes per slot for key and value and
    4 per slot for each float32 state tensor (``state`` of them)."""
    width = max(max(row) for row in counts)
    return len(counts) * len(counts[0]) * width * (2 * head_dim * elt + 4 * state)


def scenario_kept(sc) -> list[list[list[int]]]:
    """Per sample and KV head, the positions a :class:`kvcheck.scenarios.Scenario`'s layer must hold
    at the end: the replay of the method (:func:`expected_kept`) over each sample's own scores, taken
    from its unpadded keys (:func:`token_scores`), its prompt length and the chunks."""
    import torch

    chunks = [step[0].shape[2] for step in sc.steps]
    out = []
    for row in range(sc.batch.shape.batch):
        keys, _ = sc.originals(row)
        scores = token_scores(sc.method.scorer, keys, torch.arange(keys.shape[1]), sc.layer_idx)
        out.append([expected_kept(sc.method, s, sc.batch.lengths[row], chunks) for s in scores])
    return out
