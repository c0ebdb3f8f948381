"""kvcheck: regression gates for KV-cache compression.

The package imports lazily (PEP 562): ``import kvcheck`` and the pytest plugin load no torch until a
name that needs it is used, so a project that runs no kvcheck test starts as fast as before.
"""
from __future__ import annotations

import importlib

from .defaults import __version__  # noqa: F401
from .errors import KvcheckError

_LAZY = {
    "REGISTRY": "methods", "EvictionMethod": "methods", "Full": "methods", "Method": "methods",
    "QuantMethod": "methods", "load_model": "model", "generate": "engine", "teacher_forced": "engine",
    "CompressedCache": "cache",
}


def method(*args, **kwargs):
    """``@kvcheck.method(params=[...], ids=...)``: declare a compression method as a pytest fixture."""
    from .declare import method as _method

    return _method(*args, **kwargs)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kvcheck' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["KvcheckError", "REGISTRY", "EvictionMethod", "Full", "Method", "QuantMethod", "load_model",
           "generate", "teacher_forced", "CompressedCache", "method"]
