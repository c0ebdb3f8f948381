"""Kept for existing imports: the method grammar lives in :mod:`kvcheck.methods.spec`."""
from __future__ import annotations

from .methods.spec import MethodSpec, build_method


def parse_method_spec(spec: str):
    """``"snapkv:compression_ratio=0.5,window=64"`` → method instance (see :class:`MethodSpec`)."""
    return MethodSpec.parse(spec).build()


__all__ = ["MethodSpec", "build_method", "parse_method_spec"]
