"""``multikey`` — multi-key needle in a haystack (RULER's ``niah_multikey``): several needles of the same
form ("The special magic number for <word> is <number>.") at seeded depths in repetitive filler; the
question asks for one key's number. Scored 1 if the first number in the output is that key's number.

Also home of the filler helpers the other synthetic tasks share: :func:`count_tokens`,
:func:`largest_fit` and :func:`fill_with_needles`.
"""
from __future__ import annotations

import random
from typing import Callable

from ..errors import KvcheckError
from .base import Sample, Task, chat_ids, register_task
from .passkey import FILLER, first_number_matches

KEYS = ["apple", "river", "tiger", "candle", "violin", "garden", "rocket", "pepper", "island", "mirror",
        "falcon", "pillow", "ladder", "marble", "saddle", "meadow", "lantern", "cactus", "harbor", "velvet",
        "thunder", "compass", "pebble", "orchid", "blanket", "canyon", "helmet", "walnut", "glacier", "trumpet"]
NUM_KEYS = 4  # the asked key + 3 distractors of the same form
HEAD = ("Some special magic numbers are hidden inside a lot of irrelevant text. Each one belongs to a "
        "word. Find them and memorize them. I will quiz you about one of them.\n\n")


def count_tokens(tokenizer, text: str, chat: bool = False) -> int:
    """Prompt tokens of ``text`` as the engine will encode it (chat template included when ``chat``)."""
    if chat:
        return len(chat_ids(tokenizer, text))
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def largest_fit(count: Callable[[int], int], length: int, lo: int = 0, hi: int | None = None) -> int:
    """The largest ``k >= lo`` with ``count(k) <= length`` (``count`` non-decreasing in ``k``, give or take
    a token where BPE merges across a boundary); ``lo - 1`` if even ``count(lo)`` is too long."""
    if count(lo) > length:
        return lo - 1
    if hi is None:
        hi = max(lo + 1, 2 * lo)
        while count(hi) <= length:
            lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: count(lo) <= length < count(hi)
        mid = (lo + hi) // 2
        if count(mid) <= length:
            lo = mid
        else:
            hi = mid
    return lo


def fill_with_needles(tokenizer, head: str, needles: list[str], depths: list[float], tail: str,
                      filler: list[str], length: int, chat: bool = False, what: str = "the needles") -> str:
    """``head + filler… + needles (each at its relative depth) + filler… + tail`` of at most ``length``
    prompt tokens and as close to it as whole filler sentences allow. Filler is taken in order, cycling;
    needles at the same position keep their order."""

    def build(k: int) -> str:
        body = [filler[i % len(filler)] for i in range(k)]
        cuts = sorted(((int(round(d * k)), j) for j, d in enumerate(depths)), reverse=True)
        for cut, j in cuts:
            body.insert(cut, needles[j])
        return head + " ".join(body) + tail

    k = largest_fit(lambda n: count_tokens(tokenizer, build(n), chat), length)
    if k < 0:
        raise KvcheckError(f"--length {length} is too short for {what} "
                           f"({count_tokens(tokenizer, build(0), chat)} tokens without filler); use a longer --length.")
    return build(k)


def make(tokenizer, n: int, length: int, seed: int) -> list[Sample]:
    rng = random.Random(f"multikey-{length}-{seed}")
    out = []
    for i in range(n):
        keys = rng.sample(KEYS, NUM_KEYS)
        values = rng.sample(range(10000, 100000), NUM_KEYS)
        depths = [rng.random() for _ in keys]
        target = rng.randrange(NUM_KEYS)
        needles = [f"The special magic number for {k} is {v}." for k, v in zip(keys, values)]
        tail = (f"\n\nWhat is the special magic number for {keys[target]}? "
                f"The special magic number for {keys[target]} is")
        prompt = fill_with_needles(tokenizer, HEAD, needles, depths, tail, FILLER, length, what="the keys")
        out.append(Sample(id=f"multikey-L{length}-s{seed}-{i:03d}", prompt=prompt, answer=str(values[target]),
                          task="multikey", meta={"key": keys[target], "depth": round(depths[target], 3),
                                                 "keys": dict(zip(keys, map(str, values)))}))
    return out


MULTIKEY = register_task(Task("multikey", "Synthetic", make, first_number_matches, max_new_tokens=8))
