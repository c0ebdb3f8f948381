"""``kv_retrieval`` — key–value retrieval (after Liu et al., "Lost in the Middle", 2023): sentences "The
value of key <key> is <5-digit value>." spread through repetitive filler; the prompt ends with one key's
sentence cut before its value, which the model must give. Keys are random 8-digit hex strings from
``random.Random``, so samples are reproducible. Scored 1 if the first number in the output is the value.

Every key is a different random string, so the other pairs are distractors of the same form. The pairs
sit one in each equal slice of the text (at a seeded point within it), and the asked pair cycles through
the slots from sample to sample, so every depth is asked equally often and a method that loses one part
of the context loses those samples.

Sized for the default 135M model (``full``, 8 samples at 512 tokens): with 4 pairs and 8-hex keys it
answers 7/8; with the paper's 36-character UUID keys 5/8, with two-word keys 5/8, with 6 pairs 5/8;
at 1K tokens, 9 pairs at random depths gave 2/8–4/8. Its misses give a neighbouring pair's value.
"""
from __future__ import annotations

import random

from .base import Sample, Task, register_task
from .multikey import fill_with_needles
from .passkey import FILLER, first_number_matches

NUM_PAIRS = 4  # the asked pair + 3 distractors
HEAD = ("Some keys, each with its value, are hidden inside irrelevant text. Every key is a unique code. "
        "Memorize them. I will ask you for the value of one key.\n\n")
TAIL = "\n\nThe value of key {key} is"


def random_key(rng: random.Random) -> str:
    return f"{rng.getrandbits(32):08x}"


def pair_line(key: str, value: int) -> str:
    return f"The value of key {key} is {value}."


def make(tokenizer, n: int, length: int, seed: int) -> list[Sample]:
    rng = random.Random(f"kv_retrieval-{length}-{seed}")
    out = []
    for i in range(n):
        keys = [random_key(rng) for _ in range(NUM_PAIRS)]
        values = rng.sample(range(10000, 100000), NUM_PAIRS)
        depths = [(j + rng.uniform(0.2, 0.8)) / NUM_PAIRS for j in range(NUM_PAIRS)]
        target = i % NUM_PAIRS
        needles = [pair_line(k, v) for k, v in zip(keys, values)]
        prompt = fill_with_needles(tokenizer, HEAD, needles, depths, TAIL.format(key=keys[target]), FILLER, length,
                                   what="the key-value pairs")
        out.append(Sample(id=f"kv_retrieval-L{length}-s{seed}-{i:03d}", prompt=prompt, answer=str(values[target]),
                          task="kv_retrieval", meta={"key": keys[target], "pairs": NUM_PAIRS,
                                                     "depth": round(depths[target], 3)}))
    return out


KV_RETRIEVAL = register_task(Task("kv_retrieval", "Synthetic", make, first_number_matches, max_new_tokens=8))
