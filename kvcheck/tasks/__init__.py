"""Tasks: deterministic synthetic generators (each with its scorer) and local-file loaders."""
from . import builtin  # noqa: F401  (registers the synthetic tasks)
from .base import TASKS, Sample, Task, register_task
from .registry import get_task
from .spec import TaskSpec, parse_task_spec

__all__ = ["TASKS", "Sample", "Task", "TaskSpec", "get_task", "parse_task_spec", "register_task"]
