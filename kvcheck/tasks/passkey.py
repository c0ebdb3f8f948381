"""``passkey`` — passkey retrieval (Mohtashami & Jaggi, 2023): a 5-digit key hidden at a seeded
depth in repetitive filler; the model must repeat it. Scored 1 if the first number in the output is
the key."""
from __future__ import annotations

import random

from ..metrics.scoring import first_number_score
from .base import Sample, Task, fill_to_length, register_task

FILLER = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
          "There and back again."]
HEAD = ("There is an important piece of information hidden inside a lot of irrelevant text. "
        "Find it and memorize it. I will quiz you about it.\n\n")


def make(tokenizer, n: int, length: int, seed: int) -> list[Sample]:
    rng = random.Random(f"passkey-{length}-{seed}")
    out = []
    for i in range(n):
        key = str(rng.randint(10000, 99999))
        depth = rng.random()
        needle = f" The pass key is {key}. Remember it. {key} is the pass key. "
        tail = "\n\nWhat is the pass key? The pass key is"
        prompt = fill_to_length(tokenizer, HEAD, needle, tail, FILLER, length, depth)
        out.append(Sample(id=f"passkey-L{length}-s{seed}-{i:03d}", prompt=prompt, answer=key, task="passkey",
                          meta={"depth": round(depth, 3)}))
    return out


def first_number_matches(sample: Sample, output: str) -> float:
    """1 if the first number in ``output`` is the sample's answer (the synthetic tasks' scorer)."""
    return first_number_score(output, sample.answer)


PASSKEY = register_task(Task("passkey", "Synthetic", make, first_number_matches, max_new_tokens=8))
