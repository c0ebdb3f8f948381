"""``kv_retrieval`` — key–value retrieval (Liu et al., "Lost in the Middle", 2023): lines of
``<uuid-like key>: <5-digit value>`` spread through repetitive filler; the question names one key and the
model must give its value. Keys are 8-4-4-4-12 hex strings from ``random.Random`` (never ``uuid4``), so
samples are reproducible. Scored 1 if the first number in the output is the value.

Every key is a different random string, so the pairs are distractors of the same form; about 60 % of
the prompt is pairs, the rest filler (which makes the length exact to a few tokens).
"""
from __future__ import annotations

import random

from .base import Sample, Task, register_task
from .multikey import count_tokens, fill_with_needles
from .passkey import FILLER, first_number_matches

PAIR_SHARE = 0.6  # share of the prompt's tokens taken by key–value lines
HEAD = ("Below is a list of keys, each with its value, hidden inside irrelevant text. Every key is a unique "
        "code. Memorize them. I will ask you for the value of one key.\n\n")


def uuid_like(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def pair_line(key: str, value: int) -> str:
    return f"\nKey: {key} Value: {value}.\n"


def make(tokenizer, n: int, length: int, seed: int) -> list[Sample]:
    rng = random.Random(f"kv_retrieval-{length}-{seed}")
    per_pair = count_tokens(tokenizer, pair_line(uuid_like(random.Random(0)), 12345))
    n_pairs = max(2, int(PAIR_SHARE * length / per_pair))
    out = []
    for i in range(n):
        keys = [uuid_like(rng) for _ in range(n_pairs)]
        values = [rng.randint(10000, 99999) for _ in range(n_pairs)]
        target = rng.randrange(n_pairs)
        depths = sorted(rng.random() for _ in range(n_pairs))
        needles = [pair_line(k, v) for k, v in zip(keys, values)]
        tail = f"\n\nWhat is the value of key {keys[target]}? Key: {keys[target]} Value:"
        prompt = fill_with_needles(tokenizer, HEAD, needles, depths, tail, FILLER, length, what="the key-value pairs")
        out.append(Sample(id=f"kv_retrieval-L{length}-s{seed}-{i:03d}", prompt=prompt, answer=str(values[target]),
                          task="kv_retrieval", meta={"key": keys[target], "pairs": n_pairs,
                                                     "position": round(target / max(1, n_pairs - 1), 3)}))
    return out


KV_RETRIEVAL = register_task(Task("kv_retrieval", "Synthetic", make, first_number_matches, max_new_tokens=8))
