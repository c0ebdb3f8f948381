"""Tasks: deterministic synthetic generators (each with its scorer) and local-file loaders."""
from .base import TASKS, Sample, Task, get_task, register_task
from . import passkey  # noqa: F401  (registers)

__all__ = ["TASKS", "Sample", "Task", "get_task", "register_task"]
