"""``variable_tracking`` — variable tracking (RULER's ``vt``): chains of assignments ``VAR ABCDE =
12345``, ``VAR FGHIJ = VAR ABCDE``, … spread through repetitive filler, each chain's statements in order.
The question asks for the value of the last variable of one chain; the other chain ends in another value.

RULER asks instead for every variable that holds a value, over longer chains; kvcheck asks for one chain's
value, opens with worked examples of walking a chain (the model writes ``VAR B = VAR A; VAR A = 12345``)
and keeps the chains to one hop (``NUM_HOPS``). Scored 1 if the first number in the output is the asked
chain's value.

This task is harder than the default 135M model can do. ``full`` at 1024 tokens answers 0.31–0.50 of
samples, and a model that guessed between the two chains would land near 0.5. These variants were
measured on 16 samples and none did better: the answer written as ``VAR B = VAR A = 12345`` (6/16);
five worked examples, or one; single-token names (``VAR Tom``), lowercase names, or word keys; the
question also put before the text; a chain's two statements side by side, so both hops are local (8/16);
RULER's own question, "find all variables assigned the value X" (mean recall 0.50); plain-English
statements, "the value of key B is the value of key A" (2–3/16); and the chat template (0/16). The model
finds the first hop in about 7–11 of 16 samples and loses the second hop in about half of those. The
task is still exact and deterministic and it still gates: a sample that ``full`` answers and a method
does not is a regression. Aim it at a larger model (``--kvcheck-model``) to use its full range.
"""
from __future__ import annotations

import random
import string

from .base import Sample, Task, register_task
from .multikey import fill_with_needles
from .passkey import FILLER, first_number_matches

NUM_HOPS = 1  # assignments after the first in each chain (a chain has NUM_HOPS + 1 variables)
NUM_CHAINS = 2  # the asked chain + distractor chains
NUM_EXAMPLES = 3  # worked examples before the text
HEAD = "Memorize and track the chains of variable assignments hidden in the following text.\n\n"
QUESTION = "\n\nQuestion: What is the value of VAR {last}? Answer: VAR {last} ="


def variable_names(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct names of five capital letters."""
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choices(string.ascii_uppercase, k=5))
        if name not in names:
            names.append(name)
    return names


def statements(names: list[str], value: int) -> list[str]:
    return [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]


def walk(names: list[str], value: int) -> str:
    """The answer after ``VAR <last> =``: `` VAR <prev>; VAR <prev> = …; VAR <first> = <value>.``"""
    steps = [f"VAR {b} = VAR {a}" for a, b in zip(names, names[1:])][::-1] + [f"VAR {names[0]} = {value}"]
    return steps[0][len(f"VAR {names[-1]} ="):] + "".join(f"; {s}" for s in steps[1:]) + "."


def chains(rng: random.Random) -> tuple[list[list[str]], list[int]]:
    names = variable_names(rng, NUM_CHAINS * (NUM_HOPS + 1))
    values = rng.sample(range(10000, 100000), NUM_CHAINS)
    return [names[c * (NUM_HOPS + 1):(c + 1) * (NUM_HOPS + 1)] for c in range(NUM_CHAINS)], values


def interleave(rng: random.Random, groups: list[list[str]]) -> list[str]:
    """Merge the chains' statement lists at random, keeping each chain's order."""
    order = [c for c, g in enumerate(groups) for _ in g]
    rng.shuffle(order)
    its = [iter(g) for g in groups]
    return [next(its[c]) for c in order]


def example(rng: random.Random) -> str:
    names, values = chains(rng)
    body = interleave(rng, [statements(n, v) for n, v in zip(names, values)])
    text = " ".join(f"{FILLER[k % len(FILLER)]} {s}" for k, s in enumerate(body))
    return (f"Example:\n{text}" + QUESTION.format(last=names[0][-1]) + walk(names[0], values[0])
            + f" So the value is {values[0]}.\n\n")


def make(tokenizer, n: int, length: int, seed: int) -> list[Sample]:
    rng = random.Random(f"variable_tracking-{length}-{seed}")
    out = []
    for i in range(n):
        head = HEAD + "".join(example(rng) for _ in range(NUM_EXAMPLES)) + "Now the text:\n\n"
        names, values = chains(rng)
        needles = interleave(rng, [statements(nm, v) for nm, v in zip(names, values)])
        depths = sorted(rng.random() for _ in needles)
        tail = QUESTION.format(last=names[0][-1])
        prompt = fill_with_needles(tokenizer, head, needles, depths, tail, FILLER, length, what="the chains")
        out.append(Sample(id=f"variable_tracking-L{length}-s{seed}-{i:03d}", prompt=prompt, answer=str(values[0]),
                          task="variable_tracking",
                          meta={"chain": names[0], "walk": walk(names[0], values[0]).strip(),
                                "distractors": {str(v): nm for nm, v in zip(names[1:], values[1:])},
                                "depths": [round(d, 3) for d in depths]}))
    return out


VARIABLE_TRACKING = register_task(Task("variable_tracking", "Synthetic", make, first_number_matches,
                                       max_new_tokens=24))
