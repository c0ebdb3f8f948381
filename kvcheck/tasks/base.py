"""Samples and the task registry. A sample has a stable id so baselines can name it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import KvcheckError
from .types import TASK_TYPES  # noqa: F401


@dataclass(frozen=True)
class Sample:
    """One prompt with its expected answer. ``chat``: wrap ``prompt`` in the model's chat template."""

    id: str
    prompt: str
    answer: str
    task: str
    task_type: str = "Synthetic"
    chat: bool = False
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Task:
    """A source of samples at a target prompt length, and the scorer for its outputs.

    Synthetic tasks generate ``n`` samples of about ``length`` prompt tokens from ``seed``. Tasks read
    from a file (``source``, holding ``size`` samples) take the file's first ``n`` samples (all when
    ``n`` is None) and keep prompts within ``length`` tokens; the seed does not change them."""

    name: str
    task_type: str  # one of TASK_TYPES
    make: Callable  # (tokenizer, n, length, seed) -> list[Sample]
    score: Callable  # (sample, output_text) -> float in [0, 1]
    max_new_tokens: int = 16
    source: str | None = None
    size: int | None = None

    def samples(self, tokenizer, n: int | None, length: int, seed: int = 0) -> list[Sample]:
        if n is None and self.source is None:
            raise KvcheckError(f"{self.name} generates samples: say how many (--samples N).")
        if n is not None and n < 1:
            raise KvcheckError(f"--samples must be >= 1, got {n}.")
        if length < 64:
            raise KvcheckError(f"--length must be >= 64 tokens for {self.name}, got {length}.")
        return self.make(tokenizer, n, length, seed)


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task




def fill_to_length(tokenizer, head: str, needle: str, tail: str, filler: list[str], length: int,
                   depth: float, chat: bool = False) -> str:
    """Build ``head + filler… + needle + filler… + tail`` of about ``length`` prompt tokens, with the
    needle at relative ``depth`` in the filler. Filler sentences are taken in order, cycling."""

    def count(text: str) -> int:
        if chat:
            return len(chat_ids(tokenizer, text))
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    fixed = count(head + needle + tail)
    per_sentence = max(1, count(" ".join(filler)) // len(filler))
    n = max(2, (length - fixed) // per_sentence)

    def build(k: int) -> str:
        body = [filler[i % len(filler)] for i in range(k)]
        cut = int(round(depth * k))
        return head + " ".join(body[:cut]) + needle + " ".join(body[cut:]) + tail

    while n > 2 and count(build(n)) > length:  # shrink to the target, then never exceed it
        n -= max(1, (count(build(n)) - length) // per_sentence)
    while count(build(n + 1)) <= length:
        n += 1
    return build(n)


def chat_ids(tokenizer, text: str) -> list[int]:
    out = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)
