"""Task lookup by name: the built-in synthetic tasks register themselves on import."""
from __future__ import annotations

from ..errors import KvcheckError
from . import builtin  # noqa: F401  (registers the built-in tasks)
from .base import TASKS, Task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KvcheckError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}, or a local file "
                           "as longbench:PATH or ruler:PATH.")
    return TASKS[name]
