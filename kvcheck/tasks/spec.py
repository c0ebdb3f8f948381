"""Task specs: a task with its prompt length and sample count, written as text on the command line
(``--kvcheck-task`` for the accuracy suite, ``--task`` for ``kvcheck eval``)::

    passkey                    a synthetic task, at the default length and sample count
    passkey@2048x16            … at 2048 prompt tokens, 16 samples (``@2048`` or ``@x16`` alone work too)
    longbench:PATH             a local LongBench JSONL file: every sample, prompts cut to the model's context
    longbench:PATH@4096x50     … its first 50 samples, prompts cut to 4096 tokens
    ruler:PATH                 a local RULER JSONL file (``ruler:PATH@x50``: its first 50 samples)

Files are read and checked when the spec is parsed, so a bad file fails before any model work.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import KvcheckError
from .base import Sample, Task
from .registry import get_task

SYNTHETIC_LENGTH = 1024  # prompt tokens for a synthetic task given without @LENGTH (the accuracy suite)
SYNTHETIC_SAMPLES = 8
_SIZE = re.compile(r"^(?P<length>\d+)?(?:x(?P<n>\d+))?$")
FORMS = ("a synthetic task (e.g. passkey or passkey@1024x8), longbench:PATH or ruler:PATH, "
         "optionally followed by @LENGTH, xN or @LENGTHxN")


def _loaders() -> dict:
    from . import longbench, ruler

    return {"longbench": longbench.load, "ruler": ruler.load}


@dataclass(frozen=True)
class TaskSpec:
    """A task at a prompt length, with a sample count. ``length``: target prompt tokens for synthetic
    tasks, the cap for file tasks (None: the model's context less the new tokens). ``n``: samples (None:
    every sample of a file)."""

    task: Task
    length: int | None
    n: int | None
    seed: int = 0

    @property
    def label(self) -> str:
        """Names the task's metrics (``<label>.accuracy``): ``passkey-L512``; ``longbench-hotpotqa``, with
        ``-L<length>`` and ``-n<samples>`` when those were given."""
        if self.task.source is None:
            return f"{self.task.name}-L{self.length}"
        return self.task.name + (f"-L{self.length}" if self.length else "") + (f"-n{self.n}" if self.n else "")

    def samples(self, tokenizer, context: int | None = None) -> list[Sample]:
        """The samples; ``context`` (the model's context in tokens) bounds file prompts without a length."""
        length = self.length
        if length is None:
            if not context:
                raise KvcheckError(f"the model does not state its context length; give {self.task.name} a length "
                                   "with @LENGTH.")
            length = context - self.task.max_new_tokens
        return self.task.samples(tokenizer, self.n, length, self.seed)


@dataclass(frozen=True)
class TaskSet:
    """What one accuracy test runs, and the suite its baselines are filed under."""

    suite: str
    specs: tuple


def parse_task_spec(text: str, length: int | None = None, n: int | None = None, seed: int = 0) -> TaskSpec:
    """A :class:`TaskSpec` from ``text`` (forms in the module docstring); a size written in ``text``
    wins over ``length`` / ``n``. Unknown names, bad sizes and unreadable files raise :class:`KvcheckError`."""
    body, at, size = text.strip().rpartition("@") if "@" in text else (text.strip(), "", "")
    if at:
        m = _SIZE.match(size)
        if not size or m is None:
            raise KvcheckError(f"task {text!r}: {size!r} after @ is not a size; write @LENGTH, @xN or @LENGTHxN "
                               "(e.g. @1024x8).")
        length = int(m["length"]) if m["length"] else length
        n = int(m["n"]) if m["n"] else n
    if not body:
        raise KvcheckError(f"empty task in {text!r}; use {FORMS}.")
    kind, colon, path = body.partition(":")
    if colon:
        loaders = _loaders()
        if kind not in loaders:
            raise KvcheckError(f"unknown task kind {kind!r} in {text!r}; use {FORMS}.")
        if not path:
            raise KvcheckError(f"task {text!r} names no file; write {kind}:PATH with PATH a local JSONL file.")
        return TaskSpec(loaders[kind](path), length, n, seed)
    task = get_task(body)
    return TaskSpec(task, length or SYNTHETIC_LENGTH, n or SYNTHETIC_SAMPLES, seed)


def tier_set(tier) -> TaskSet:
    """The tier's synthetic tasks, filed under the ``accuracy`` suite."""
    return TaskSet("accuracy", tuple(TaskSpec(get_task(name), length, n) for name, length, n in tier.accuracy))


def extra_set(spec: TaskSpec) -> TaskSet:
    """One task given on the command line, filed under its own suite (``accuracy-<label>``), so the
    tier's committed baselines never mix with it."""
    return TaskSet(f"accuracy-{spec.label}", (spec,))
